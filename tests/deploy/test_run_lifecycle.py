"""start / logs / status / fetch / down against the fixture's sshd, with a scripted stand-in trainer.

The stand-in (conftest.FAKE_PYTHON) makes runs of a chosen length and exit code in
seconds; the real trainer is exercised end to end in test_e2e_train.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import threading
import time

import pytest

from tests.deploy.watch_support import run_alive, wait_for
from tests.trainer.tiny_cache import make_cache


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def deployed(project, *, start=True):
    for cmd in ("up", "sync") + (("start",) if start else ()):
        r = project.run(cmd)
        assert r.returncode == 0, (cmd, r.stdout, r.stderr)
    return project.state().get("current_run")


def follow_logs(project):
    """`logs --follow` with a thread reading its stdout into a list, once 5 run lines are shown."""
    proc = project.popen("logs", "--follow", "-n", "1000")
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)
    reader.start()
    wait_for(lambda: any("line 5 of" in ln for ln in out), what="the first lines")
    return proc, out, reader


def test_failed_run_is_reported_with_last_lines_and_exit_code(project, fake_trainer):
    fake_trainer.behave(lines=4, delay=0.05, code=3)
    run = deployed(project)
    r = project.run("logs", "--follow")
    assert r.returncode == 3
    assert "line 4 of 4" in r.stdout
    assert "fake failure: exit 3" in r.stdout  # the failed command's stderr, appended to train.log
    assert "failed with exit code 3" in r.stderr.strip().splitlines()[-1]
    status = json.loads(project.run("status", "--json").stdout)
    assert status["run"] == run and status["state"] == "failed" and status["exit_code"] == 3
    assert status["epochs_done"] == 4
    # best_model.keras is the lowest val_loss (epoch 2 here), not the highest val_accuracy (epoch 4)
    assert status["best_model"] == {"epoch": 2, "val_loss": 1.5, "val_accuracy": 0.2}
    assert "[deploy]" in status["log_tail"][-1] and "exit code 3" in status["log_tail"][-1]
    table = project.run("status")
    assert table.returncode == 0 and "failed (exit code 3)" in table.stdout
    assert "best model" in table.stdout and "epoch 2 of 4  val_loss=1.5000  val_accuracy=0.2000" in table.stdout


def test_killed_run_is_reported_as_stopped_and_can_be_resumed(project, fake_trainer):
    fake_trainer.behave(lines=100, delay=0.1, code=0, resume_code=0)
    run = deployed(project)
    pid = int((project.remote_run_dir(run) / "pid").read_text())
    os.killpg(pid, signal.SIGKILL)  # the whole job dies at once: no exit status is written
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what="the job to die")
    r = project.run("logs", "-f")
    assert r.returncode == 2 and "stopped without an exit status" in r.stderr
    assert json.loads(project.run("status", "--json").stdout)["state"] == "stopped"
    fake_trainer.behave(lines=2, delay=0.0, code=0, resume_code=0)
    assert project.run("start", "--resume").returncode == 0
    assert project.run("logs", "-f").returncode == 0


def test_interpreter_without_the_trainers_packages_is_refused(project, fake_trainer, tmp_path):
    bare = tmp_path / "bare python"
    bare.write_text("#!/bin/sh\nexec /usr/bin/env python3 -I \"$@\"\n")
    bare.chmod(0o755)
    deployed(project, start=False)
    project.write_config(remote={"python": str(bare)})
    r = project.run("start")
    assert r.returncode == 2 and "lacks tensorflow" in r.stderr and "auto-venv" in r.stderr


@pytest.mark.slow
def test_second_start_refused_while_running_and_resume_continues(project, fake_trainer):
    fake_trainer.behave(lines=40, delay=0.1, code=1, resume_code=0)
    run = deployed(project)
    r = project.run("start")
    assert r.returncode == 2 and f"run {run} is still running" in r.stderr
    assert project.run("logs", "-f").returncode == 1
    r = project.run("start", "--resume")
    assert r.returncode == 0, r.stderr
    assert project.state()["current_run"] == run
    r = project.run("logs", "-f", "-n", "5")
    assert r.returncode == 0
    log = (project.remote_run_dir(run) / "train.log").read_text()
    assert log.count("run ended with exit code") == 2  # both attempts in one log
    assert "resuming" in (project.remote_run_dir(run) / "console.log").read_text()
    assert "--resume" in (project.remote_run_dir(run) / "run.sh").read_text()


@pytest.mark.slow
def test_ssh_dropped_during_follow_the_run_goes_on_and_logs_pick_up(project, fake_trainer):
    # held at line 10 until the drop: on a loaded CI box `start` and `logs -f` took longer than
    # a 20-s run, which then ended before the drop (proving nothing, and failing the check)
    fake_trainer.behave(lines=100, delay=0.02, code=0, hold_at=10)
    run = deployed(project)
    proc, out, reader = follow_logs(project)
    assert project.server.drop_connections() >= 1
    time.sleep(0.5)
    # the run was detached: it is still going although every SSH session is gone
    assert not (project.remote_run_dir(run) / "exit_status").exists()
    assert os.path.exists(f"/proc/{int((project.remote_run_dir(run) / 'pid').read_text())}")
    fake_trainer.release()
    assert proc.wait(60) == 0
    reader.join(5)
    stderr = proc.stderr.read()
    assert "connection to 127.0.0.1 lost" in stderr
    lines = [ln.strip() for ln in out if ln.startswith("line ")]
    assert lines == [f"line {i} of 100" for i in range(1, 101)]  # nothing lost, nothing twice
    later = project.run("logs", "-n", "3")
    assert later.returncode == 0 and "line 100 of 100" in later.stdout and "finished" in later.stderr


def test_ctrl_c_stops_only_the_viewing(project, fake_trainer):
    # held at line 2 (never released; `stop` ends it): on a loaded machine `logs -f` can take
    # longer to start than a timed run lasts, and a run that ended before the Ctrl-C proves nothing
    fake_trainer.behave(lines=300, delay=0.02, code=0, hold_at=2)
    run = deployed(project)
    proc = project.popen("logs", "-f")
    # Ctrl-C once `logs` is really following (it has printed run lines), however slow the
    # machine is to start it; a fixed sleep raced a loaded CI box.
    first = proc.stdout.readline()
    while first and not first.startswith("line "):
        first = proc.stdout.readline()
    assert first.startswith("line "), "logs -f printed no run line"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(20) == 130
    assert "keeps going" in proc.stderr.read()
    time.sleep(1)
    assert run_alive(project, run)  # the run never saw the Ctrl-C
    assert project.run("stop").returncode == 0  # (only to end it; `stop` has tests of its own)


@pytest.mark.slow
def test_fetch_mid_run_then_final_verified_and_down(project, fake_trainer):
    # held at line 3 until the mid-run fetch is done: that fetch must see a run still going
    fake_trainer.behave(lines=25, delay=0.2, code=0, hold_at=3)
    run = deployed(project)
    remote = project.remote_run_dir(run)
    wait_for(lambda: (remote / "best_model.keras").exists(), what="a first model")
    mid = project.run("fetch")
    assert mid.returncode == 0, mid.stderr
    local = project.cwd / "runs" / run
    # the stand-in rewrites best_model.keras in place every 0.2 s: fetch installs it only when a
    # copy was verified, otherwise says it is being written; never a torn file
    model = local / "best_model.keras"
    assert (model.is_file() and model.stat().st_size == 200_000) or "still being written" in mid.stdout, mid.stdout
    state = project.state()["runs"][run]
    assert state["final_fetch"] is False  # fetched while running: not the final results
    fake_trainer.release()
    assert project.run("logs", "-f").returncode == 0

    final = project.run("fetch")
    assert final.returncode == 0, final.stderr
    recorded = project.state()["runs"][run]["fetches"][-1]
    assert recorded["final"] is True
    for name in ("best_model.keras", "training_history.csv", "metrics.json", "train.log", "plots/history.png"):
        assert digest(local / name) == digest(remote / name) == recorded["files"][name], name
    assert json.loads((local / "metrics.json").read_text()) == {"accuracy": 0.75}
    assert not (local / "run.sh").exists() and not (local / "pid").exists()  # only results come home

    # a damaged local copy (same size, same mtime) is caught by the hash and repaired
    model = local / "best_model.keras"
    st = model.stat()
    data = bytearray(model.read_bytes())
    data[1000] ^= 0xFF
    model.write_bytes(bytes(data))
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = project.run("fetch")
    assert again.returncode == 0, again.stderr
    assert digest(model) == digest(remote / "best_model.keras")

    down = project.run("down")
    assert down.returncode == 0 and "forgot" in down.stdout
    assert "host" not in project.state()
    assert project.run("status").returncode == 2


def test_cache_only_sync_skips_extract(project, fake_trainer):
    cache = make_cache(project.cwd / "cache", {"train": 2, "val": 2})  # the demo config's feature settings
    project.write_config(dataset={"path": None, "cache": str(cache)})
    run = deployed(project)
    assert project.state()["last_sync"]["source"] == "cache"
    assert (project.workspace / "cache" / "meta.json").is_file()
    assert project.run("logs", "-f").returncode == 0
    log = (project.remote_run_dir(run) / "train.log").read_text()
    assert "no extract" in log and "fake extract" not in log


def test_unchanged_dataset_skips_extract_on_the_next_run(project, fake_trainer):
    run1 = deployed(project)
    assert project.run("logs", "-f").returncode == 0
    assert "fake extract" in (project.remote_run_dir(run1) / "train.log").read_text()
    time.sleep(1.1)  # run names are per second
    assert project.run("start").returncode == 0
    run2 = project.state()["current_run"]
    assert run2 != run1 and project.run("logs", "-f").returncode == 0
    log2 = (project.remote_run_dir(run2) / "train.log").read_text()
    assert "extract skipped" in log2 and "fake extract" not in log2, log2


def test_run_does_everything_and_down_on_request(project, fake_trainer):
    fake_trainer.behave(lines=5, delay=0.05, code=0)
    r = project.run("run", "--down")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "line 5 of 5" in r.stdout and "fetched run" in r.stdout and "forgot" in r.stdout
    run = next(iter(project.state()["runs"]))
    assert (project.cwd / "runs" / run / "metrics.json").is_file()
    assert project.state()["runs"][run]["final_fetch"] is True


def test_run_with_a_failing_job_fetches_its_log_and_exits_2(project, fake_trainer):
    fake_trainer.behave(lines=2, delay=0.0, code=5)
    r = project.run("run")
    assert r.returncode == 2
    assert "failed with exit code 5" in r.stderr.strip().splitlines()[-1]
    run = project.state()["current_run"]
    assert "fake failure: exit 5" in (project.cwd / "runs" / run / "train.log").read_text()
    assert "host" in project.state()  # a failed run never releases the host


def test_ssh_opens_a_shell_in_the_workspace(project):
    assert project.run("up").returncode == 0
    r = subprocess.run(project.argv("ssh"), cwd=project.cwd, env=project.env(), input="pwd -P\nexit\n",
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert str(project.workspace) in r.stdout


def test_stop_ends_the_run_with_143_and_destroys_nothing(project, fake_trainer):
    fake_trainer.behave(lines=300, delay=0.1, code=0)
    run = deployed(project)
    wait_for(lambda: "line 3 of" in (project.remote_run_dir(run) / "train.log").read_text(), what="the run")
    r = project.run("stop", timeout=150)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "exit code 143" in r.stdout and "start --resume" in r.stdout
    assert (project.remote_run_dir(run) / "exit_status").read_text().strip() == "143"
    assert "host" in project.state()  # nothing released
    assert (project.remote_run_dir(run) / "training_history.csv").is_file()  # nothing deleted
    assert project.run("logs", "-f").returncode == 143
    again = project.run("stop")
    assert again.returncode == 0 and "nothing to stop" in again.stdout


def test_run_sh_started_by_hand_is_seen_as_running(project, fake_trainer):
    """run.sh says it is safe to re-run by hand; `sh run.sh` then must count as a live run
    everywhere (status, start's refusal, the watchdog), not as an interrupted one."""
    from deploy.host.shipped import watchdog

    fake_trainer.behave(lines=2, delay=0.0)
    run = deployed(project)
    assert project.run("logs", "-f").returncode == 0
    fake_trainer.behave(lines=200, delay=0.1)
    run_dir = project.remote_run_dir(run)
    (run_dir / "exit_status").unlink()
    by_hand = subprocess.Popen(["sh", "run.sh"], cwd=run_dir, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (run_dir / "pid").is_file() and int((run_dir / "pid").read_text()) == by_hand.pid,
                 what="the pid file")
        assert watchdog.runs(project.workspace)[run] == "running"
        assert '"state": "running"' in project.run("status", "--json").stdout
        r = project.run("start")
        assert r.returncode == 2 and "still running" in r.stderr
    finally:
        os.killpg(by_hand.pid, signal.SIGKILL)
        by_hand.wait()


def _sshd_session_processes(server) -> list[int]:
    """Every sshd process serving a connection (children and grandchildren of the listener)."""
    if not server.running:
        return []
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
        except OSError:
            continue
        names[int(entry)] = stat[stat.index("(") + 1:stat.rindex(")")]
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    listener = server._proc.pid
    found, frontier = [], [listener]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and names.get(pid, "").startswith("sshd"):
                found.append(pid)
                frontier.append(pid)
    return found


@pytest.mark.slow
def test_a_silently_dead_link_is_noticed_and_logs_pick_up_exactly(project, fake_trainer):
    """A frozen sshd (or a NAT that dropped the link) sends no error: without keepalives that
    wait for an answer, `logs -f` would sit there forever."""
    fake_trainer.behave(lines=120, delay=0.2, code=0)
    run = deployed(project)
    proc, out, reader = follow_logs(project)
    frozen = _sshd_session_processes(project.server)
    assert frozen
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        err: list[str] = []
        err_reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
        err_reader.start()
        wait_for(lambda: any("connection to 127.0.0.1 lost" in ln for ln in err), timeout=45,
                 what="logs -f to notice the dead link")
        assert time.monotonic() - t0 < 40
        assert proc.wait(90) == 0
    finally:
        for pid in frozen:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    reader.join(5)
    lines = [ln.strip() for ln in out if ln.startswith("line ")]
    assert lines == [f"line {i} of 120" for i in range(1, 121)]  # nothing lost, nothing twice
    assert (project.remote_run_dir(run) / "exit_status").read_text().strip() == "0"
