"""Fixtures shared by test_watch.py and test_tensorboard.py.

- `sshd` (overrides conftest's): the same real OpenSSH server, with local port forwarding
  allowed (`AllowTcpForwarding local`, what Vast.ai's and most hosts' sshd allow; conftest's
  server says `no`) and a folder of our own first on the PATH of every SSH session
  (`SetEnv PATH=...`), where a test may put a stand-in `nvidia-smi`. `.forwarding = False`
  then `.apply()` puts back the refusing configuration.
- `epoch_trainer`: `remote.python` becomes a stand-in whose `trainer train` prints the
  trainer's real epoch lines (trainer/callbacks.py EpochProgress format) into train.log,
  one every `delay` seconds, and writes training_history.csv rows like Keras's CSVLogger.

The only part that is not real is the GPU: there is none here, so `fake_nvidia_smi` writes a
script that prints the CSV text nvidia-smi prints (deploy/host/gpu_stats.py documents the format).
"""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

import pytest

from tests.deploy.conftest import StandInPython, use_stand_in
from tests.deploy.sshd import SshServer, sshd_available


class ForwardingSshServer(SshServer):
    def __init__(self, root: Path):
        self.forwarding = True
        self.bin_dir = Path(root) / "bin on path"
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(root)
        self.set_env(PATH=f"{self.bin_dir}:/usr/local/bin:/usr/bin:/bin")

    def _write_config(self) -> None:
        super()._write_config()
        text = self.config_file.read_text()
        text = text.replace("AllowTcpForwarding no", f"AllowTcpForwarding {'local' if self.forwarding else 'no'}")
        self.config_file.write_text(text)

    def apply(self) -> None:
        self._write_config()
        self.restart()


@pytest.fixture
def sshd(tmp_path_factory):
    if not sshd_available():
        pytest.skip("OpenSSH server not installed (apt-get install openssh-server)")
    server = ForwardingSshServer(tmp_path_factory.mktemp("sshd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


# The text nvidia-smi prints for this query (format: deploy/host/gpu_stats.py), two GPUs, the second
# idle with a power reading the driver does not have.
NVIDIA_SMI_CSV = """\
index, name, utilization.gpu [%], memory.used [MiB], memory.total [MiB], power.draw [W], power.limit [W], temperature.gpu
0, NVIDIA RTX 5000 Ada Generation, 97 %, 30012 MiB, 32760 MiB, 245.67 W, 250.00 W, 71
1, NVIDIA RTX 5000 Ada Generation, 0 %, 4 MiB, 32760 MiB, [N/A], 250.00 W, 38
"""


def fake_nvidia_smi(server: ForwardingSshServer, csv_text: str = NVIDIA_SMI_CSV) -> Path:
    """Put a stand-in `nvidia-smi` on the host's PATH: it answers exactly our query, as the real one
    answers an unknown field or format with an error and exit code 2."""
    from deploy.host import gpu_stats

    (server.bin_dir / "gpu.csv").write_text(csv_text)
    script = server.bin_dir / "nvidia-smi"
    script.write_text(f"""#!/bin/sh
if [ "$*" = {shlex.quote(gpu_stats.QUERY.split(' ', 1)[1])} ]; then cat "$(dirname "$0")/gpu.csv"; exit 0; fi
echo "Field \\"$*\\" is not a valid field to query." >&2
exit 2
""")
    script.chmod(0o755)
    return script


EPOCH_PYTHON = r"""#!/bin/sh
# `-m trainer train` prints one epoch line per `delay` seconds in EpochProgress's format;
# anything else is the real Python.
here=$(dirname "$0")
if [ "$1" = "-m" ] && [ "$2" = "trainer" ] && [ "$3" = "extract" ]; then echo "fake extract"; exit 0; fi
if [ "$1" = "-m" ] && [ "$2" = "trainer" ] && [ "$3" = "train" ]; then
  read epochs delay < "$here/behavior"
  out=""; prev=""
  for a in "$@"; do [ "$prev" = "--output-dir" ] && out=$a; prev=$a; done
  echo "epoch,accuracy,learning_rate,loss,val_accuracy,val_loss" > "$out/training_history.csv"
  echo "Epoch progress: $epochs epochs" >> "$out/train.log"
  i=1
  while [ "$i" -le "$epochs" ]; do
    sleep "$delay"
    printf 'epoch %3d/%d  loss 0.%04d  accuracy 0.5000  val_loss 0.6900  val_accuracy 0.%04d  lr 1.00e-03  1,234 samples/s  2s  ETA %dm%02ds\n' \
      "$i" "$epochs" "$((7000 - i))" "$((5000 + i))" "$(( (epochs - i) * 2 / 60 ))" "$(( (epochs - i) * 2 % 60 ))" >> "$out/train.log"
    echo "$((i - 1)),0.5,0.001,0.6,0.$((5000 + i)),0.69" >> "$out/training_history.csv"
    i=$((i + 1))
  done
  exit 0
fi
exec "$REAL_PYTHON" "$@"
"""


class EpochTrainer(StandInPython):
    SCRIPT = EPOCH_PYTHON

    def behave(self, epochs: int = 300, delay: float = 0.3) -> None:
        (self.path.parent / "behavior").write_text(f"{epochs} {delay}\n")


@pytest.fixture
def epoch_trainer(project, tmp_path):
    return use_stand_in(project, EpochTrainer(tmp_path / "epoch python"))


def deploy_and_start(project) -> str:
    for cmd in ("up", "sync", "start"):
        r = project.run(cmd)
        assert r.returncode == 0, (cmd, r.stdout, r.stderr)
    return project.state()["current_run"]


def wait_for(predicate, timeout=30.0, what="condition", interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def run_alive(project, run: str) -> bool:
    """The detached run's process is alive and it has not ended."""
    d = project.remote_run_dir(run)
    if (d / "exit_status").exists():
        return False
    pid = int((d / "pid").read_text())
    return subprocess.run(["kill", "-0", str(pid)]).returncode == 0
