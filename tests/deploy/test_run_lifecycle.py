"""start / logs / status / fetch / down against the fixture's sshd, with a scripted stand-in trainer.

The stand-in (conftest.FAKE_PYTHON) makes runs of a chosen length and exit code in
seconds; the real trainer is exercised end to end in test_e2e_train.py.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def deployed(project, *, start=True):
    for cmd in ("up", "sync") + (("start",) if start else ()):
        r = project.run(cmd)
        assert r.returncode == 0, (cmd, r.stdout, r.stderr)
    return project.state().get("current_run")


def wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


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
    assert status["epochs_done"] == 4 and status["best_val_accuracy"] == 0.4
    assert "[deploy]" in status["log_tail"][-1] and "exit code 3" in status["log_tail"][-1]


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


def test_ssh_dropped_during_follow_the_run_goes_on_and_logs_pick_up(project, fake_trainer):
    fake_trainer.behave(lines=60, delay=0.1, code=0)
    run = deployed(project)
    proc = project.popen("logs", "--follow", "-n", "1000")
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)
    reader.start()
    wait_for(lambda: any("line 5 of" in ln for ln in out), what="the first lines")
    assert project.server.drop_connections() >= 1
    # the run was detached: it is still going although every SSH session is gone
    assert not (project.remote_run_dir(run) / "exit_status").exists()
    assert proc.wait(60) == 0
    reader.join(5)
    stderr = proc.stderr.read()
    assert "connection to 127.0.0.1 lost" in stderr
    lines = [ln.strip() for ln in out if ln.startswith("line ")]
    assert lines == [f"line {i} of 60" for i in range(1, 61)]  # nothing lost, nothing twice
    later = project.run("logs", "-n", "3")
    assert later.returncode == 0 and "line 60 of 60" in later.stdout and "finished" in later.stderr


def test_ctrl_c_stops_only_the_viewing(project, fake_trainer):
    import signal

    fake_trainer.behave(lines=30, delay=0.1, code=0)
    run = deployed(project)
    proc = project.popen("logs", "-f")
    wait_for(lambda: (project.remote_run_dir(run) / "train.log").stat().st_size > 50, what="log")
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(20) == 130
    assert "keeps going" in proc.stderr.read()
    wait_for(lambda: (project.remote_run_dir(run) / "exit_status").exists(), what="the run to finish")
    assert (project.remote_run_dir(run) / "exit_status").read_text().strip() == "0"


def test_fetch_mid_run_then_final_verified_and_down(project, fake_trainer):
    fake_trainer.behave(lines=25, delay=0.2, code=0)
    run = deployed(project)
    remote = project.remote_run_dir(run)
    wait_for(lambda: (remote / "best_model.keras").exists(), what="a first model")
    mid = project.run("fetch")
    assert mid.returncode == 0, mid.stderr
    local = project.cwd / "runs" / run
    assert (local / "best_model.keras").stat().st_size == 200_000
    state = project.state()["runs"][run]
    assert state["final_fetch"] is False  # fetched while running: not the final results
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
    import os
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = project.run("fetch")
    assert again.returncode == 0, again.stderr
    assert digest(model) == digest(remote / "best_model.keras")

    down = project.run("down")
    assert down.returncode == 0 and "forgot" in down.stdout
    assert "host" not in project.state()
    assert project.run("status").returncode == 2


def test_cache_only_sync_skips_extract(project, fake_trainer):
    cache = project.cwd / "cache"
    (cache / "features").mkdir(parents=True)
    (cache / "meta.json").write_text("{}")
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
