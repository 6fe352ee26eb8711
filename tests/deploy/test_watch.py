"""`watch`: the live view of a run, through a pipe and through a real terminal (tmux).

The run is real and detached (`up`, `sync`, `start` against the real sshd), with a stand-in
trainer that prints the trainer's epoch lines (watch_support.EPOCH_PYTHON). The GPU part:
there is no GPU here, so the parser is checked on nvidia-smi's documented CSV text and a
stand-in `nvidia-smi` on the host's PATH checks only the plumbing.
"""

from __future__ import annotations

import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
import urllib.request

import pytest

from deploy import watch
from deploy.host import gpu_stats
from tests.deploy.watch_support import (NVIDIA_SMI_CSV, deploy_and_start, epoch_trainer, fake_nvidia_smi,  # noqa: F401
                                        run_alive, sshd, wait_for)


# -- the parsers -------------------------------------------------------------------------
def test_nvidia_smi_csv_is_parsed_by_column_name_with_units_and_missing_values():
    gpus = gpu_stats.parse(NVIDIA_SMI_CSV)
    assert gpus == [
        {"index": "0", "name": "NVIDIA RTX 5000 Ada Generation", "util_pct": 97.0, "mem_used_mib": 30012.0,
         "mem_total_mib": 32760.0, "power_w": 245.67, "power_limit_w": 250.0, "temp_c": 71.0},
        {"index": "1", "name": "NVIDIA RTX 5000 Ada Generation", "util_pct": 0.0, "mem_used_mib": 4.0,
         "mem_total_mib": 32760.0, "power_w": None, "power_limit_w": 250.0, "temp_c": 38.0},
    ]
    assert gpu_stats.describe(gpus[0]) == "97% busy  30012/32760 MiB  246/250 W  71 C"
    assert gpu_stats.describe(gpus[1]) == "0% busy  4/32760 MiB  -/250 W  38 C"
    # another column order and "[Not Supported]" (consumer boards often report no power limit)
    other = ("name, index, temperature.gpu, utilization.gpu [%], memory.total [MiB], memory.used [MiB], "
             "power.limit [W], power.draw [W]\nTesla T4, 3, 72, 98 %, 15360 MiB, 7234 MiB, [Not Supported], 31.20 W\n")
    (g,) = gpu_stats.parse(other)
    assert (g["index"], g["util_pct"], g["mem_used_mib"], g["power_w"], g["power_limit_w"], g["temp_c"]) == \
        ("3", 98.0, 7234.0, 31.2, None, 72.0)
    assert gpu_stats.no_gpu_reason(NVIDIA_SMI_CSV) is None


def test_no_gpu_and_a_failing_nvidia_smi_each_give_one_line():
    assert gpu_stats.no_gpu_reason("no-nvidia-smi\n") == \
        "no GPU on the host (no nvidia-smi): training runs on the CPU there"
    failed = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that "
              "the latest NVIDIA driver is installed and running.\n")
    assert gpu_stats.parse(failed) == []
    assert gpu_stats.no_gpu_reason(failed).startswith("no GPU numbers: nvidia-smi says: NVIDIA-SMI has failed")


def test_epoch_line_of_the_real_trainer_is_parsed():
    pytest.importorskip("keras")
    from trainer.callbacks import EpochProgress

    lines: list[str] = []
    cb = EpochProgress(epochs=20, samples_per_epoch=900, log=lines.append)
    cb.on_epoch_begin(2)
    cb.on_epoch_end(2, {"loss": 0.61234, "accuracy": 0.7, "val_loss": 0.65, "val_accuracy": 0.68,
                        "learning_rate": 0.001})
    info = watch.parse_epoch_line(lines[0])
    assert info["epoch"] == 3 and info["epochs"] == 20
    assert info["metrics"] == {"loss": "0.6123", "accuracy": "0.7000", "val_loss": "0.6500",
                               "val_accuracy": "0.6800", "lr": "1.00e-03"}
    assert info["eta"] and info["took"] and info["speed"]
    assert watch.parse_epoch_line("[deploy] 2026-12-01T10:00:00Z train") is None


# -- the command against a running run ----------------------------------------------------
def _blocks(text: str) -> list[dict[str, list[str]]]:
    """Plain output -> one {label: [texts]} per refresh."""
    blocks = []
    for chunk in text.split("\n-- ")[0:]:
        rows: dict[str, list[str]] = {}
        for line in chunk.splitlines()[1:]:
            label, _, value = line.partition("  ")
            rows.setdefault(label.strip(), []).append(value.strip())
        if rows:
            blocks.append(rows)
    return blocks


def _epoch_of(block) -> int | None:
    for text in block.get("epoch", []):
        if "/" in text:
            return int(text.split("/")[0])
    return None


def test_watch_through_a_pipe_shows_epoch_gpus_disk_reconnects_and_ctrl_c_leaves_the_run(
        project, epoch_trainer, sshd):
    fake_nvidia_smi(sshd)
    run = deploy_and_start(project)
    proc = project.popen("watch", "--interval", "0.5")
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)
    reader.start()
    text = lambda: "".join(out)  # noqa: E731
    wait_for(lambda: any(_epoch_of(b) for b in _blocks(text())), timeout=60, what="an epoch row")
    first = next(b for b in _blocks(text()) if _epoch_of(b))
    assert "\x1b[" not in text(), "escape codes in a non-terminal stdout"
    assert first["run"][0].startswith(run) and "running" in first["run"][0]
    epoch_row = first["epoch"][0]
    assert epoch_row.split("/")[1].startswith("300 (") and "ETA " in epoch_row and "samples/s" in epoch_row
    assert first["metrics"][0].startswith("loss 0.") and "val_accuracy 0.5" in first["metrics"][0]
    assert first["gpu 0"] == ["NVIDIA RTX 5000 Ada Generation  97% busy  30012/32760 MiB  246/250 W  71 C"]
    assert first["gpu 1"] == ["NVIDIA RTX 5000 Ada Generation  0% busy  4/32760 MiB  -/250 W  38 C"]
    assert first["disk free"][0].endswith(" GB")
    # the stand-in's val_loss never improves after epoch 1 while val_accuracy rises: the best model is epoch 1
    assert first["best model"][0].startswith("epoch 1 of ") and first["best model"][0].endswith(
        "val_loss=0.6900  val_accuracy=0.5001")
    assert first["spent"] == ["nothing billed (not a rented instance)"]
    assert first["host"][0].endswith("provider ssh (your own host)")
    seen = _epoch_of(first)

    # a dropped link: the view comes back by itself, with later epochs; the run never noticed
    assert sshd.drop_connections() >= 1
    wait_for(lambda: (_epoch_of(_blocks(text())[-1]) or 0) > seen + 2, timeout=60, what="later epochs")
    assert sshd.session_pids(), "watch did not open a new SSH connection"
    # the host gone for a few seconds (sshd down): the view says so, retries, and comes back
    seen = _epoch_of(_blocks(text())[-1])
    sshd.refuse_for(3).join()
    wait_for(lambda: (_epoch_of(_blocks(text())[-1]) or 0) > seen + 2, timeout=60, what="epochs after the outage")
    assert "connection to 127.0.0.1 lost; reconnecting (the run goes on)" in text()

    proc.send_signal(signal.SIGINT)
    assert proc.wait(20) == 0
    assert "the run keeps going" in proc.stderr.read()
    assert run_alive(project, run)
    assert "Traceback" not in text()


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")
def test_watch_in_a_terminal_draws_the_table_and_ctrl_c_leaves_the_run(project, epoch_trainer, tmp_path):
    # no nvidia-smi on this host's PATH: the GPU row says so in one line
    run = deploy_and_start(project)
    sock = str(tmp_path / "tmux.sock")
    cmd = " ".join(shlex.quote(a) for a in project.argv("watch", "--interval", "0.5"))
    tmux = ["tmux", "-S", sock]
    subprocess.run(tmux + ["new-session", "-d", "-s", "w", "-x", "200", "-y", "40", "-c", str(project.cwd),
                           f"{cmd}; echo EXIT=$?; sleep 600"], check=True, env=project.env())
    try:
        def screen() -> str:
            return subprocess.run(tmux + ["capture-pane", "-p", "-t", "w"], capture_output=True, text=True).stdout

        wait_for(lambda: "/300 (" in screen(), timeout=60, what="the epoch row on the terminal")
        shown = screen()
        assert "ETA " in shown and "running" in shown and "Ctrl-C stops watching" in shown
        assert "no GPU on the host (no nvidia-smi)" in shown
        assert "-- 2" not in shown and shown.count("/300 (") == 1, "the view was printed again instead of redrawn"
        first = screen()
        wait_for(lambda: screen() != first, timeout=30, what="a refresh")
        subprocess.run(tmux + ["send-keys", "-t", "w", "C-c"], check=True)
        wait_for(lambda: "EXIT=0" in screen(), timeout=20, what="watch to end")
        assert "the run keeps going" in screen()
        time.sleep(0.5)
        assert run_alive(project, run)
    finally:
        subprocess.run(tmux + ["kill-server"], capture_output=True)


@pytest.mark.slow
def test_watch_and_tensorboard_on_vast_money_spent_ctrl_c_and_a_stopped_instance(vast, epoch_trainer):
    vast.fake.add_offer(dph_base=0.9)
    for cmd in ("up", "sync", "start"):
        r = vast.run(cmd)
        assert r.returncode == 0, (cmd, r.stdout, r.stderr)
    run = vast.state()["current_run"]
    proc = vast.project.popen("watch", "--interval", "0.5", env=vast.env())
    out: list[str] = []
    threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True).start()
    try:
        wait_for(lambda: any(_epoch_of(b) for b in _blocks("".join(out))), timeout=60, what="an epoch row")
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(20)
    block = next(b for b in _blocks("".join(out)) if _epoch_of(b))
    assert code == 0
    assert block["host"][0].endswith("provider vast")
    (spent,) = block["spent"]
    # what Vast bills (issue 9): GPU while running, disk since created; the price with its disk part
    assert re.fullmatch(r"\$\d+\.\d\d \(GPU \$\d+\.\d\d while running, disk \$\d+\.\d\d since created\) "
                        r"so far at \$0\.9\d*/h while running \(\$0\.\d\d/h disk only while stopped\), "
                        r"\$\d+\.\d\d projected", spent), spent
    assert run_alive(vast.project, run)

    # tensorboard through the same provider, ended with Ctrl-C (SIGINT)
    proc = vast.project.popen("tensorboard", env=vast.env())
    try:
        first = proc.stdout.readline()
        m = re.fullmatch(r"TensorBoard: (http://127\.0\.0\.1:\d+/[A-Za-z0-9_-]{20,}/)\n", first)
        assert m, (first, proc.stderr.read() if proc.poll() is not None else "")
        with urllib.request.urlopen(m.group(1), timeout=30) as page:
            assert page.status == 200 and "<title>TensorBoard</title>" in page.read().decode()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not list((vast.project.workspace / ".deploy-tensorboard").glob("*.pid"))
    assert run_alive(vast.project, run)

    # a stopped instance: one line each, and neither command starts it (and its billing) again
    (inst,) = vast.fake.live_instances()
    inst.stopped_at = time.time()
    for cmd in ("watch", "tensorboard"):
        r = vast.run(cmd)
        assert r.returncode == 2 and r.stdout == "", (cmd, r.stdout, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "the host is not running (stopped" in r.stderr, r.stderr
    assert vast.fake._status(inst)[1] == "stopped"
    assert vast.run("down", "--force").returncode == 0
