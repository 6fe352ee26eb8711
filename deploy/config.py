"""configs/deploy.yaml: load, fill defaults, reject mistakes with a one-line error.

The result is a plain dict (providers get the whole of it); the `vast:` section is
passed through untouched and validated by deploy/providers/vast/settings.py.
Relative local paths (dataset.path, dataset.cache, train.config, ssh.identity_file)
are resolved against the current directory, like every other path the user types.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import yaml

from deploy.errors import UsageError

DEFAULT_PATH = "configs/deploy.yaml"

DEFAULTS: dict = {
    "provider": "ssh",
    "ssh": {
        "host": None,
        "port": 22,
        "user": "root",
        "identity_file": None,
        "connect_timeout": 15,  # seconds for one attempt
        "retry_for": 300,  # seconds `up` keeps retrying while a host boots
    },
    # python: an interpreter with the trainer's packages | auto-venv | overlay (deploy/host/overlay.py);
    # base_python: overlay's base (None: /venv/main/bin/python where it exists, else python3);
    # pip_args: extra pip flags for overlay's installs (a mirror, --find-links, ...)
    "remote": {"workspace": "/workspace", "python": "python3", "base_python": None, "pip_args": []},
    "dataset": {"path": "./dataset", "cache": None, "url": None, "kaggle": None, "token_env": None},
    "train": {"config": "configs/train.yaml", "args": []},
    "vast": {},
}

_TYPES = {
    ("provider",): str,
    ("ssh", "host"): (str, type(None)),
    ("ssh", "port"): int,
    ("ssh", "user"): str,
    ("ssh", "identity_file"): (str, type(None)),
    ("ssh", "connect_timeout"): (int, float),
    ("ssh", "retry_for"): (int, float),
    ("remote", "workspace"): str,
    ("remote", "python"): str,
    ("remote", "base_python"): (str, type(None)),
    ("remote", "pip_args"): list,
    ("dataset", "path"): (str, type(None)),
    ("dataset", "cache"): (str, type(None)),
    ("dataset", "url"): (str, type(None)),
    ("dataset", "kaggle"): (str, type(None)),
    ("dataset", "token_env"): (str, type(None)),
    ("train", "config"): str,
    ("train", "args"): list,
    ("vast",): dict,
}

AUTO_VENV = "auto-venv"  # remote.python value: build a virtualenv on the host from pyproject.toml
OVERLAY = "overlay"  # remote.python value: a venv over a host Python that already has TensorFlow
VENV_MODES = (AUTO_VENV, OVERLAY)


def load(path: str | os.PathLike | None = None) -> dict:
    path = Path(path or DEFAULT_PATH)
    if not path.is_file():
        raise UsageError(f"config file {path} not found: copy configs/deploy.yaml or pass --config FILE")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        # where the parser stopped, and what it was inside (e.g. the flow mapping that never closed)
        mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None) or str(exc).splitlines()[0]
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        context, cmark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and cmark is not None:
            problem += f" ({context} at line {cmark.line + 1}, column {cmark.column + 1})"
        raise UsageError(f"{path}{where}: not valid YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise UsageError(f"{path} must be a mapping of sections (provider, ssh, remote, dataset, train)")
    return validate(raw, source=str(path))


def validate(raw: dict, source: str = "config") -> dict:
    cfg = copy.deepcopy(DEFAULTS)
    for key, value in raw.items():
        if key not in DEFAULTS:
            raise UsageError(f"{source}: unknown key '{key}' (known: {', '.join(DEFAULTS)})")
        if isinstance(DEFAULTS[key], dict) and key != "vast":
            if value is None:
                continue
            if not isinstance(value, dict):
                raise UsageError(f"{source}: '{key}' must be a mapping")
            for sub, v in value.items():
                if sub not in DEFAULTS[key]:
                    raise UsageError(f"{source}: unknown key '{key}.{sub}' (known: {', '.join(DEFAULTS[key])})")
                _check_type((key, sub), v, source)
                cfg[key][sub] = v
        else:
            _check_type((key,), value, source)
            cfg[key] = value if value is not None else DEFAULTS[key]

    if not 1 <= cfg["ssh"]["port"] <= 65535:
        raise UsageError(f"{source}: ssh.port must be 1-65535, got {cfg['ssh']['port']}")
    if not cfg["remote"]["workspace"].strip():
        raise UsageError(f"{source}: remote.workspace must not be empty")
    if not all(isinstance(a, (str, int, float)) for a in cfg["train"]["args"]):
        raise UsageError(f"{source}: train.args must be a list of strings, e.g. [\"--epochs\", \"2\"]")
    cfg["train"]["args"] = [str(a) for a in cfg["train"]["args"]]
    if not all(isinstance(a, str) for a in cfg["remote"]["pip_args"]):
        raise UsageError(f"{source}: remote.pip_args must be a list of strings, e.g. [\"--index-url\", \"URL\"]")
    if cfg["remote"]["base_python"] and cfg["remote"]["python"] != OVERLAY:
        raise UsageError(f"{source}: remote.base_python is only used with remote.python: overlay")

    ds = cfg["dataset"]
    remote_sources = [k for k in ("url", "kaggle") if ds[k]]
    if len(remote_sources) > 1:
        raise UsageError(f"{source}: set only one of dataset.url and dataset.kaggle")
    if remote_sources:
        ds["path"] = None  # the host downloads the dataset itself; nothing local to upload
    if ds["url"] and not re.match(r"^https?://", ds["url"]):
        raise UsageError(f"{source}: dataset.url must start with http:// or https://, got {ds['url']!r}")
    if ds["kaggle"] and not re.fullmatch(r"[\w.-]+/[\w.-]+", ds["kaggle"]):
        raise UsageError(f"{source}: dataset.kaggle must be an OWNER/DATASET slug, got {ds['kaggle']!r}")
    if ds["token_env"] and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", ds["token_env"]):
        raise UsageError(f"{source}: dataset.token_env must be an environment variable NAME, not its value")

    for section, key in (("dataset", "path"), ("dataset", "cache"), ("train", "config"), ("ssh", "identity_file")):
        if cfg[section][key]:
            cfg[section][key] = str(Path(os.path.expanduser(cfg[section][key])).absolute())
    return cfg


def _check_type(key: tuple, value, source: str) -> None:
    expected = _TYPES.get(key)
    if expected is None or value is None and key[0] != "provider":
        return
    if isinstance(value, bool) or not isinstance(value, expected):
        names = expected.__name__ if isinstance(expected, type) else " or ".join(
            t.__name__ for t in expected if t is not type(None))
        raise UsageError(f"{source}: '{'.'.join(key)}' must be {names}, got {value!r}")
