"""Fixtures for the deploy tests: a real OpenSSH server on 127.0.0.1 (see sshd.py), and the
Vast.ai provider aimed at a local fake of its API (see fake_vast.py)."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.deploy.fake_vast import FakeVast, fake_vast  # noqa: F401  (registers the fixture)
from tests.deploy.sshd import SshServer, sshd_available


@pytest.fixture
def sshd(tmp_path_factory):
    """A running sshd on 127.0.0.1:<random port> with its own host and user keys.

    Yields an `SshServer`: .host .port .user .identity_file, .deploy_ssh_config(),
    .stop() .start() .restart() .refuse_for(s) .drop_connections() .regenerate_host_key().
    """
    if not sshd_available():
        pytest.skip("OpenSSH server not installed (apt-get install openssh-server)")
    server = SshServer(tmp_path_factory.mktemp("sshd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- a project directory driving `python -m deploy` against the fixture's sshd ----------

REPO = Path(__file__).resolve().parents[2]
# Every character a careless remote command would mangle: space, quotes, $(...), backtick.
AWKWARD = "work space 'q\" $(touch PWNED) `id`"


def tiny_dataset(folder: Path) -> Path:
    """Two real, tiny videos in class folders: a dataset every preflight accepts (deploy/preflight.py
    scans dataset.path before `up` rents and before `sync` sends)."""
    from tests.trainer.videos import indexed_frames, write_opencv

    write_opencv(folder / "violent" / "v0.mp4", indexed_frames(4))
    write_opencv(folder / "nonviolent" / "n0.mp4", indexed_frames(5))
    return folder


class DeployProject:
    """A working directory with its own configs/deploy.yaml and .deploy/, aimed at `sshd`."""

    def __init__(self, root: Path, server, workspace: Path):
        tiny_dataset(root / "dataset")
        self.cwd = root
        self.server = server
        self.workspace = workspace
        self.config_path = root / "deploy.yaml"
        self.config = {
            "provider": "ssh",
            "ssh": {**server.deploy_ssh_config(), "connect_timeout": 5, "retry_for": 20},
            "remote": {"workspace": str(workspace), "python": sys.executable},
            "dataset": {"path": str(root / "dataset")},
            "train": {"config": str(REPO / "configs" / "demo.yaml"), "args": ["--epochs", "2"]},
        }
        self.write_config()

    def write_config(self, **sections) -> None:
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(self.config.get(key), dict):
                self.config[key] = {**self.config[key], **value}
            else:
                self.config[key] = value
        self.config_path.write_text(yaml.safe_dump(self.config))

    def env(self, extra: dict | None = None) -> dict:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", COLUMNS="200")
        env.update(extra or {})
        return env

    def argv(self, *args) -> list[str]:
        return [sys.executable, "-m", "deploy", "--config", str(self.config_path), *map(str, args)]

    def run(self, *args, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), cwd=self.cwd, env=self.env(env), capture_output=True,
                              text=True, timeout=timeout)

    def popen(self, *args, env: dict | None = None, **kw) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*args), cwd=self.cwd, env=self.env(env), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)

    def state(self) -> dict:
        return json.loads((self.cwd / ".deploy" / "state.json").read_text())

    def remote_run_dir(self, run: str) -> Path:
        return self.workspace / "runs" / run


@pytest.fixture
def project(sshd, tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    workspace = tmp_path / AWKWARD / "ws"
    yield DeployProject(root, sshd, workspace)
    # a test that left a detached run behind must not leave it running
    for pid_file in workspace.glob("runs/*/pid"):
        try:
            os.killpg(int(pid_file.read_text().strip()), 15)
        except (ValueError, OSError):
            pass
    assert not list(tmp_path.rglob("PWNED")), "a remote path was shell-interpreted"


FAKE_PYTHON = r"""#!/bin/sh
# A stand-in interpreter for runs that need no real training: `-m trainer train` prints
# numbered lines, writes result files and exits as ./behavior says; anything else is
# the real Python.
here=$(dirname "$0")
if [ "$1" = "-m" ] && [ "$2" = "trainer" ] && [ "$3" = "extract" ]; then echo "fake extract"; exit 0; fi
if [ "$1" = "-m" ] && [ "$2" = "trainer" ] && [ "$3" = "train" ]; then
  read lines delay code resume_code hold_at < "$here/behavior"
  out=""; prev=""
  for a in "$@"; do [ "$prev" = "--output-dir" ] && out=$a; prev=$a; done
  case " $* " in *" --resume "*) code=$resume_code; echo "resuming";; esac
  echo "epoch,accuracy,loss,val_accuracy,val_loss,learning_rate" > "$out/training_history.csv"
  i=1
  while [ "$i" -le "$lines" ]; do
    echo "line $i of $lines" >> "$out/train.log"
    # val_accuracy rises every epoch while val_loss is lowest at epoch 2: the best model
    # (lowest val_loss, as the trainer keeps it) is not the epoch of the best accuracy
    d=$((i > 2 ? i - 2 : 2 - i))
    echo "$i,0.5,0.7,0.$i,$((d + 1)).5,0.001" >> "$out/training_history.csv"
    head -c 200000 /dev/urandom > "$out/best_model.keras"
    # held at this line until the test releases it: a run that must still be going when the
    # test looks cannot end early on a slow machine
    if [ "$i" = "$hold_at" ]; then while [ ! -e "$here/release" ]; do sleep 0.05; done; fi
    sleep "$delay"
    i=$((i+1))
  done
  mkdir -p "$out/plots" && echo png > "$out/plots/history.png"
  echo '{"accuracy": 0.75}' > "$out/metrics.json"
  [ "$code" != 0 ] && echo "fake failure: exit $code" >&2
  exit "$code"
fi
exec "$REAL_PYTHON" "$@"
"""


class StandInPython:
    """`<folder>/python`: a sh stand-in for the interpreter (SCRIPT), the real one for all else."""

    SCRIPT = ""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "python"
        self.path.write_text(self.SCRIPT.replace('"$REAL_PYTHON"', shlex.quote(sys.executable)))
        self.path.chmod(0o755)
        self.behave()

    def behave(self, *args) -> None:
        raise NotImplementedError


class FakeTrainer(StandInPython):
    SCRIPT = FAKE_PYTHON

    def behave(self, lines: int = 3, delay: float = 0.0, code: int = 0, resume_code: int = 0,
               hold_at: int = 0) -> None:
        """`hold_at`: the run stops after that line until `release()` (0: never held)."""
        (self.path.parent / "release").unlink(missing_ok=True)
        (self.path.parent / "behavior").write_text(f"{lines} {delay} {code} {resume_code} {hold_at}\n")

    def release(self) -> None:
        (self.path.parent / "release").write_text("")


def use_stand_in(project, stand_in: StandInPython) -> StandInPython:
    """`remote.python` becomes the stand-in, and the project gets a dataset it never opens."""
    project.write_config(remote={"python": str(stand_in.path)})
    (project.cwd / "dataset").mkdir(exist_ok=True)
    (project.cwd / "dataset" / "a.txt").write_text("not a video; the stand-in trainer does not care\n")
    return stand_in


@pytest.fixture
def fake_trainer(project, tmp_path):
    """`remote.python` becomes a stand-in whose `trainer train` is scripted (see FAKE_PYTHON)."""
    return use_stand_in(project, FakeTrainer(tmp_path / "fake python"))


# -- the project switched to provider vast, aimed at the fake Vast.ai API ----------------
class Vast:
    """The `project` fixture switched to provider vast, aimed at the fake."""

    def __init__(self, project, fake: FakeVast, sshd, tmp_path):
        self.project, self.fake, self.sshd = project, fake, sshd
        self.config_home = tmp_path / "xdg"  # no stray ~/.config/vastai/vast_api_key is read
        self.config_home.mkdir()
        self.api_key = fake.api_key
        sshd.authorized_keys.write_text("")
        fake.authorized_keys_file = sshd.authorized_keys
        # Every Vast.ai container carries its own key and id (vast-ai/docs guides/instances/
        # docker-environment.mdx:112-113): the sshd hands the key to every session, so the watchdog
        # that `up` installs really runs, and `start` (which needs it alive) can start runs.
        fake.fixed_instance_key = "inst-" + secrets.token_hex(12)
        sshd.set_env(CONTAINER_API_KEY=fake.fixed_instance_key)
        sshd.restart()
        fake.ssh_direct = fake.ssh_proxy = (sshd.host, sshd.port)
        # The fake enforces the create endpoint's minimum interval (4.5 s in the spec); scaled
        # down here so tests stay fast, with our own spacing scaled to match.
        fake.interval_scale = 0.02
        project.write_config(provider="vast", vast={
            "server_url": fake.url, "image": "registry.example/violence-trainer:1.0", "disk_gb": 80,
            "poll_seconds": 0.05, "ready_timeout_minutes": 0.25, "restart_timeout_minutes": 0.25,
            "create_interval_seconds": 0.1, "max_attempts": 3,
            "watchdog_poll_seconds": 0.2, "env": {"TF_CPP_MIN_LOG_LEVEL": "2"},
            # a stated image size: the job estimate then asks no registry for its manifest, so
            # no test (whatever image it names) sends a request beyond 127.0.0.1
            "image_gb": 1.0,
        })

    def set(self, **vast) -> None:
        self.project.write_config(vast={**self.project.config["vast"], **vast})

    def env(self, key: str | None = "default") -> dict:
        env = {"XDG_CONFIG_HOME": str(self.config_home), "HOME": str(self.config_home)}
        env["VAST_API_KEY"] = self.api_key if key == "default" else (key or "")
        return env

    def run(self, *args, key: str | None = "default", timeout: float = 120) -> subprocess.CompletedProcess:
        return self.project.run(*args, env=self.env(key), timeout=timeout)

    def state(self) -> dict:
        return self.project.state()

    def teardown(self) -> None:
        pid = self.project.workspace / ".watchdog" / "watchdog.pid"
        if pid.is_file():
            try:
                os.kill(int(pid.read_text()), 15)
            except (OSError, ValueError):
                pass


@pytest.fixture
def vast(project, fake_vast, sshd, tmp_path):  # noqa: F811  (the fixture, by name)
    v = Vast(project, fake_vast, sshd, tmp_path)
    yield v
    v.teardown()


def out(r) -> str:
    return r.stdout + r.stderr
