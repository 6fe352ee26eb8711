"""The trainer's own checks, run here as a program: `python -m trainer scan --json` and `train --dry-run`.

deploy/ never imports trainer/ (nor TensorFlow), yet the laptop must judge a run with
exactly the rules the host will apply: the trainer's argument parser for `train.args`,
its config schema for `train.config`, its dataset discovery, class names and video
extensions for `dataset.path`. Both packages ship together (one pyproject.toml), so
`sys.executable -m trainer` is always there; a subprocess keeps its imports (NumPy,
OpenCV) out of deploy's process. `scan` needs only PyYAML (OpenCV, when installed, adds
durations and resolutions); `train --dry-run` needs the trainer's NumPy, and says so when
it is missing instead of passing silently.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

TIMEOUT_S = 600.0  # a scan of tens of thousands of videos on a slow disk; the dry run takes a second


@dataclass
class Outcome:
    ok: bool  # the trainer ran and accepted the input
    ran: bool  # the trainer ran at all (False: it could not start here, e.g. NumPy missing)
    error: str = ""  # the trainer's one-line reason (exit 2), or why it did not run
    report: dict = field(default_factory=dict)  # scan: the JSON report (also on exit 2 after a report)
    output: str = ""


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return subprocess.run([sys.executable, "-m", "trainer", *args], capture_output=True, text=True, env=env,
                          timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)


def _last_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln[len("error: "):] for ln in lines if ln.startswith("error: ")]
    return errors[-1] if errors else (lines[-1] if lines else "no message")


def _outcome(r: subprocess.CompletedProcess, command: str) -> Outcome:
    if r.returncode == 0:
        return Outcome(True, True, output=r.stdout)
    if r.returncode == 2:
        return Outcome(False, True, _last_error(r.stderr), output=r.stdout)
    return Outcome(False, False, f"`python -m trainer {command}` could not run here ({_last_error(r.stderr)}): "
                                 f"install the trainer's packages (`make setup`, or pip install -e '.[train,cpu]')")


@functools.lru_cache(maxsize=8)
def scan(dataset: str, train_config: str | None) -> Outcome:
    """`python -m trainer scan DATASET --json [--config F]`, once per process for the same inputs."""
    args = ["scan", dataset, "--json"] + (["--config", train_config] if train_config else [])
    try:
        r = _run(args)
    except subprocess.TimeoutExpired:
        return Outcome(False, False, f"the dataset scan took more than {TIMEOUT_S:.0f} s")
    out = _outcome(r, "scan")
    if out.ran and r.stdout.strip():
        try:
            out.report = json.loads(r.stdout)
        except json.JSONDecodeError:
            pass
    return out


def train_dry_run(config: dict) -> Outcome:
    """The run's own `train` command line (start.py's run script), parsed and checked by the trainer.

    The cache is the local `dataset.cache` when there is one (its feature settings are then
    compared with the config's), else a path that does not exist here: the host makes it.
    """
    tc = config["train"]
    cache = config["dataset"].get("cache")
    nowhere = Path(tempfile.gettempdir()) / f"deploy-preflight-{os.getpid()}-not-created"
    args = ["train", "--cache-dir", str(cache) if cache and Path(cache).is_dir() else str(nowhere / "cache"),
            "--output-dir", str(nowhere / "run"), "--config", tc["config"], *tc["args"], "--dry-run"]
    try:
        return _outcome(_run(args), "train --dry-run")
    except subprocess.TimeoutExpired:
        return Outcome(False, False, "`python -m trainer train --dry-run` did not answer")
