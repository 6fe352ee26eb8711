"""One deploy command at a time per .deploy/ (deploy/local/lock.py): a second terminal is told who holds
it, read-only commands are not blocked, a killed holder never leaves it stuck, and two `up`s at
once rent one instance, not two (real sshd, the real vastai SDK against the fake API)."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time

from tests.deploy.conftest import out


def hold_lock(project):
    """The lock as another deploy command holds it: flock'ed, its pid inside."""
    (project.cwd / ".deploy").mkdir(exist_ok=True)
    fd = os.open(project.cwd / ".deploy" / "lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    os.write(fd, b"4242\n")
    return fd


def test_a_second_command_is_told_which_pid_holds_the_lock(project):
    assert project.run("up").returncode == 0
    fd = hold_lock(project)
    try:
        for cmd in ("sync", "start", "fetch", "down", "up", "stop"):
            t0 = time.monotonic()
            r = project.run(cmd, env={"DEPLOY_LOCK_WAIT": "0.5"})
            assert r.returncode == 2, (cmd, out(r))
            last = r.stderr.strip().splitlines()[-1]
            assert "another deploy command is running (pid 4242)" in last and "Traceback" not in r.stderr, (cmd, last)
            assert time.monotonic() - t0 < 30
        assert project.run("status").returncode == 0  # read-only: never blocked
    finally:
        os.close(fd)
    assert project.run("sync", "--code-only").returncode == 0  # released: the next command goes ahead


def test_a_killed_holder_leaves_no_stale_lock(project):
    code = ("import sys, time; sys.path.insert(0, sys.argv[1]); from deploy.local.lock import DeployLock; "
            "DeployLock('.deploy').acquire(); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(os.getcwd())], cwd=project.cwd,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert (project.cwd / ".deploy" / "lock").read_text().strip() == str(holder.pid)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    r = project.run("up")
    assert r.returncode == 0, out(r)


def test_two_ups_at_once_rent_one_instance(vast):
    fake = vast.fake
    fake.add_offer()
    fake.add_offer()
    original = fake.handle

    def slow(*args, **kwargs):  # the real API's latency: what turned the race into two rentals
        time.sleep(0.5)
        return original(*args, **kwargs)

    fake.handle = slow
    results = [None, None]

    def up(i):
        results[i] = vast.run("up", timeout=180)

    threads = [threading.Thread(target=up, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(200)
    fake.handle = original
    try:
        assert len(fake.live_instances()) == 1, [out(r) for r in results]
        ok = [r for r in results if r.returncode == 0]
        assert ok, [out(r) for r in results]
        for r in results:
            assert r.returncode == 0 or "another deploy command is running" in r.stderr, out(r)
        assert vast.state()["vast"]["instance_id"] == fake.live_instances()[0].id
    finally:
        vast.run("down", "--force")


def _vast_provider(root):
    from deploy.local.state import State
    from deploy.providers.vast.provider import VastProvider

    return VastProvider({"vast": {}, "remote": {"workspace": "/workspace"}}, State(root))


def test_status_beside_a_locked_command_loses_nothing_of_either(tmp_path):
    """`status` and `watch` take no lock, yet note when they see the instance start or stop
    running (the billing ledger). They wrote back the whole state.json they had read: a
    `start` in the other terminal lost its run, and `down` then saw no unfetched results."""
    from deploy.providers.base import Host

    root = tmp_path / ".deploy"
    cmd = _vast_provider(root)  # the locked command (up, then start)
    cmd.state.set_host("vast", Host(host="127.0.0.1", port=22, user="root"), "/workspace")
    cmd._remember(4000001, {"id": 7, "num_gpus": 2, "gpu_name": "RTX 5000Ada"}, 0.9)
    status = _vast_provider(root)  # a second terminal, loaded before the start below
    cmd.state.record_start("run-a")
    status._observe({"id": 4000001, "actual_status": "running", "intended_status": "running"})  # status sees it running
    watch_view = _vast_provider(root)
    cmd.state.record_fetch("run-a", {}, final=False)  # the locked command saves its own (older) ledger
    on_disk = _vast_provider(root).state.data
    assert on_disk["current_run"] == "run-a" and "run-a" in on_disk["runs"]  # status did not drop the run
    assert on_disk["vast"]["running_since"] == watch_view.state.data["vast"]["running_since"]  # nor fetch the ledger
    status._observe({"id": 4000001, "actual_status": "exited", "intended_status": "stopped"})  # stopped: ledger closed
    on_disk = _vast_provider(root).state.data
    assert "running_since" not in on_disk["vast"] and on_disk["vast"]["gpu_seconds"] >= 0
    assert on_disk["current_run"] == "run-a"
