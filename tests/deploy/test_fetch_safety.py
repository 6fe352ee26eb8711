"""fetch never installs a half-written file, run names stay inside runs/, and a run's
state is what it is (a stale pid after a host restart is not a live run), against the
fixture's sshd and real rsync."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time

import pytest

from deploy.host.shipped.runstate import RUN_MARK


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def live_run(project, name="r1") -> tuple:
    """A run folder on the "host" whose pid is a live process that looks like run.sh."""
    run_dir = project.remote_run_dir(name)
    run_dir.mkdir(parents=True)
    holder = subprocess.Popen(["sh", "-c", "sleep 120", str(run_dir / "run.sh"), RUN_MARK], start_new_session=True)
    (run_dir / "pid").write_text(f"{holder.pid}\n")
    (run_dir / "train.log").write_text("epoch 1\n")
    return run_dir, holder


@pytest.mark.slow
def test_a_model_half_written_in_place_never_replaces_the_good_local_copy(project):
    assert project.run("up").returncode == 0
    run_dir, holder = live_run(project)
    try:
        good, new = os.urandom(300_000), os.urandom(300_000)
        model = run_dir / "best_model.keras"
        model.write_bytes(good)
        first = project.run("fetch", "--run", "r1")
        assert first.returncode == 0, first.stderr
        local = project.cwd / "runs" / "r1" / "best_model.keras"
        assert local.read_bytes() == good

        # Keras rewrites the file in place; this writer pauses half-way with the file open
        with open(model, "r+b") as writer:
            writer.truncate(0)
            writer.write(new[:150_000])
            writer.flush()
            for _ in range(2):  # neither fetch may install (or call verified) the torn file
                r = project.run("fetch", "--run", "r1")
                assert r.returncode == 0, r.stderr
                assert local.read_bytes() == good, "a torn model replaced the good local copy"
                assert "best_model.keras" in r.stdout.split("still being written")[-1]
                assert "best_model.keras" not in project.state()["runs"]["r1"]["fetches"][-1]["files"]
            assert not list((project.cwd / "runs").glob(".fetching/r1/*.keras"))  # staging cleaned up
            writer.write(new[150_000:])
        done = project.run("fetch", "--run", "r1")
        assert done.returncode == 0, done.stderr
        assert local.read_bytes() == new
        assert not (project.cwd / "runs" / ".fetching").exists()  # no staging left behind
        assert project.state()["runs"]["r1"]["fetches"][-1]["files"]["best_model.keras"] == digest(model)
    finally:
        holder.kill()
        holder.wait()


def test_stale_pid_after_a_host_restart_is_not_a_live_run(project, fake_trainer):
    """After a reboot the pid file names some other live process: logs, fetch, status and start agree
    the run is stopped (before: logs -f hung, fetch said running forever, start launched another)."""
    assert project.run("up").returncode == 0 and project.run("sync").returncode == 0
    fake_trainer.behave(lines=100, delay=0.1)
    assert project.run("start", "--name", "r1").returncode == 0
    run_dir = project.remote_run_dir("r1")
    pid = int((run_dir / "pid").read_text())
    os.killpg(pid, signal.SIGKILL)
    other = subprocess.Popen(["sleep", "120"], start_new_session=True)  # the pid's new owner after the reboot
    try:
        (run_dir / "pid").write_text(f"{other.pid}\n")
        t0 = time.monotonic()
        r = project.run("logs", "-f", timeout=60)
        assert r.returncode == 2 and "stopped without an exit status" in r.stderr, r.stderr
        assert time.monotonic() - t0 < 30
        status = project.run("status", "--json")
        assert '"state": "stopped"' in status.stdout
        fetched = project.run("fetch")
        assert fetched.returncode == 0 and "(stopped)" in fetched.stdout, fetched.stdout + fetched.stderr
        assert project.state()["runs"]["r1"]["final_fetch"] is True  # down is not refused forever
        fake_trainer.behave(lines=2, delay=0.0)
        resumed = project.run("start", "--resume")  # not "still running"
        assert resumed.returncode == 0, resumed.stderr
    finally:
        other.kill()
        other.wait()


def test_run_names_cannot_climb_out_of_runs(project, fake_trainer):
    assert project.run("up").returncode == 0 and project.run("sync").returncode == 0
    for bad in ("../../../../escape-run", ".hidden", "a/b", "-rf", "x\n"):
        r = project.run("start", f"--name={bad}")
        assert r.returncode == 2 and "run name" in r.stderr and "not allowed" in r.stderr, (bad, r.stderr)
        r = project.run("fetch", f"--run={bad}")
        assert r.returncode == 2 and "not allowed" in r.stderr, (bad, r.stderr)
    assert not list(project.workspace.parent.rglob("escape-run"))
    assert not (project.cwd.parent / "escape-run").exists()
    assert project.run("start", "--name", "ok_name-1.2").returncode == 0


def test_a_run_name_reused_on_another_host_is_refused(project, fake_trainer, tmp_path):
    assert project.run("up").returncode == 0 and project.run("sync").returncode == 0
    fake_trainer.behave(lines=2, delay=0.0)
    assert project.run("start", "--name", "exp1").returncode == 0
    assert project.run("logs", "-f").returncode == 0
    assert project.run("fetch").returncode == 0
    first = (project.cwd / "runs" / "exp1" / "best_model.keras").read_bytes()
    assert project.run("down").returncode == 0
    # another host (another workspace on the same sshd) gets a run of the same name
    project.write_config(remote={"workspace": str(tmp_path / "other ws")})
    assert project.run("up").returncode == 0 and project.run("sync").returncode == 0
    r = project.run("start", "--name", "exp1")
    assert r.returncode == 2 and "exp1" in r.stderr and "another --name" in r.stderr, r.stderr
    # and a same-named run that exists there anyway is not fetched on top of the first one's files
    other_run = tmp_path / "other ws" / "runs" / "exp1"
    other_run.mkdir(parents=True)
    (other_run / "exit_status").write_text("0\n")
    (other_run / "best_model.keras").write_bytes(b"another run's model")
    r = project.run("fetch", "--run", "exp1")
    assert r.returncode == 2 and "another --name" in r.stderr
    assert (project.cwd / "runs" / "exp1" / "best_model.keras").read_bytes() == first


def test_a_run_resumed_while_fetching_is_not_recorded_as_fetched_for_good(project):
    """fetch of an ended run while `start --resume` (here: from another machine) brings it back to
    life: final_fetch must not be true, or `down` would destroy a training run unguarded."""
    import threading

    assert project.run("up").returncode == 0
    run_dir = project.remote_run_dir("r1")
    run_dir.mkdir(parents=True)
    (run_dir / "exit_status").write_text("1\n")
    (run_dir / "train.log").write_text("epoch 1\nfailed\n")
    (run_dir / "best_model.keras").write_bytes(os.urandom(2_000_000))
    local = project.cwd / "runs" / "r1"
    holder: list = []

    def resume_when_fetch_begins():
        deadline = time.monotonic() + 60
        while not local.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        p = subprocess.Popen(["sh", "-c", "sleep 120", str(run_dir / "run.sh"), RUN_MARK], start_new_session=True)
        holder.append(p)
        (run_dir / "pid").write_text(f"{p.pid}\n")
        (run_dir / "exit_status").unlink()

    t = threading.Thread(target=resume_when_fetch_begins, daemon=True)
    t.start()
    try:
        r = project.run("fetch", "--run", "r1")
        t.join(60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert holder, "the resume never happened"
        assert project.state()["runs"]["r1"]["final_fetch"] is False
        assert "while fetching" in r.stdout
    finally:
        for p in holder:
            p.kill()
            p.wait()
