"""Where things are, on both sides: the project root here, the workspace layout there.

    <workspace>/app        trainer/, configs/, pyproject.toml, README.md (synced code)
    <workspace>/dataset    the videos (synced, or downloaded by the host itself)
    <workspace>/cache      the feature cache
    <workspace>/runs/<run> one training run: train.log, exit_status, checkpoints, results
    <workspace>/venv       only with remote.python: auto-venv or overlay
"""

from __future__ import annotations

import posixpath
from pathlib import Path

import deploy
from deploy.config import AUTO_VENV, OVERLAY, VENV_MODES
from deploy.errors import UsageError
from deploy.host.shipped.runstate import RUN_NAME


def check_run_name(name: str) -> str:
    """A run name is a folder name on the host (runs/<run>) and here (runs/<run>): nothing that climbs out."""
    if not RUN_NAME.fullmatch(name or ""):
        raise UsageError(f"run name {name!r} is not allowed: use letters, digits and -_. (not starting with . or -), "
                         f"at most 100 characters")
    return name


def project_root() -> Path:
    """The checkout whose trainer/ is synced: the current directory if it is one, else ours."""
    for root in (Path.cwd(), Path(deploy.__file__).resolve().parent.parent):
        if (root / "trainer").is_dir() and (root / "pyproject.toml").is_file():
            return root
    raise UsageError("cannot find the project (a folder with trainer/ and pyproject.toml): run from the checkout")


class Layout:
    def __init__(self, workspace: str):
        self.workspace = workspace  # absolute, as resolved on the host by `up`

    def __getattr__(self, name):  # app, dataset, cache, runs, venv
        if name in ("app", "dataset", "cache", "runs", "venv"):
            return posixpath.join(self.workspace, name)
        raise AttributeError(name)

    def run_dir(self, run: str) -> str:
        return posixpath.join(self.workspace, "runs", check_run_name(run))

    def python(self, config: dict) -> str:
        py = config["remote"]["python"]
        return posixpath.join(self.venv, "bin", "python") if py in VENV_MODES else py

    @staticmethod
    def host_python(config: dict) -> str:
        """An interpreter that is on the host before any venv of ours: for probes, downloads, the watchdog."""
        remote = config.get("remote") or {}
        py = remote.get("python") or "python3"
        if py == AUTO_VENV:
            return "python3"
        if py == OVERLAY:
            return remote.get("base_python") or "python3"
        return py

    def train_config(self, config: dict) -> str:
        """The train config's path relative to <workspace>/app (see sync.sync_code)."""
        local = Path(config["train"]["config"])
        try:
            return local.resolve().relative_to(project_root()).as_posix()
        except ValueError:
            return f"run-configs/{local.name}"
