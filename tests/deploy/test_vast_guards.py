"""Provider vast guards, with the real SDK against the fake API and the fixture's sshd as the
instance: a forced destroy records what it gave up, `status` shows the watchdog, API failures
and plain-http keys are one-line refusals."""

from __future__ import annotations

import json

import pytest

from tests.deploy.conftest import out


def test_down_force_records_the_results_as_given_up(vast, fake_trainer):
    vast.fake.add_offer()
    vast.fake.add_offer()
    fake_trainer.behave(lines=2, delay=0.0)
    for cmd in ("up", "sync", "start"):
        r = vast.run(cmd)
        assert r.returncode == 0, (cmd, out(r))
    run = vast.state()["current_run"]
    refused = vast.run("down")
    assert refused.returncode == 2 and "has not been fetched" in refused.stderr
    forced = vast.run("down", "--force")
    assert forced.returncode == 0, out(forced)
    assert vast.state()["runs"][run]["given_up_at"]
    # a new instance later: its `down` is not blocked by the results given up on the old one
    assert vast.run("up").returncode == 0
    later = vast.run("down")
    assert later.returncode == 0, out(later)
    assert not vast.fake.live_instances()


def test_status_shows_the_watchdog_its_next_stop_and_when_it_is_dead(vast):
    fake = vast.fake  # the fixture's sshd hands every session the instance's key (CONTAINER_API_KEY)
    fake.add_offer()
    vast.set(idle_grace_minutes=30, watchdog_poll_seconds=0.2)
    try:
        r = vast.run("up")
        assert r.returncode == 0 and "watchdog is not running" not in r.stderr, out(r)
        import time

        time.sleep(1)
        info = json.loads(vast.run("status", "--json").stdout)
        wd = info["watchdog"]
        assert wd["running"] is True and wd["pid"] > 0
        assert wd["last_tick_age_s"] is not None and wd["last_tick_age_s"] < 30
        assert wd["will_stop"]["rule"] == "idle_grace_minutes"
        table = vast.run("status")
        assert "watchdog" in table.stdout and "running (pid" in table.stdout
        assert "idle_grace_minutes: in" in table.stdout

        import os
        import signal

        os.kill(wd["pid"], signal.SIGKILL)  # the guard died: status must say so, loudly
        time.sleep(0.3)
        table = vast.run("status")
        assert "NOT running" in table.stdout and "cost guards are off" in table.stdout
    finally:
        vast.run("down", "--force")


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_vast_api_5xx_is_one_line(vast, status):
    fake = vast.fake
    fake.add_offer()
    original = fake.handle

    def failing(method, path, *args, **kwargs):  # the service having a bad minute
        if path.startswith("/api/"):
            fake.requests.append({"method": method, "path": path, "body": None, "auth": "user"})
            return status, "<html><body>upstream error</body></html>", {}
        return original(method, path, *args, **kwargs)

    fake.handle = failing
    for cmd in ("offers", "up"):
        r = vast.run(cmd, timeout=180)
        assert r.returncode == 2, out(r)
        assert "Traceback" not in r.stderr, r.stderr
        line = r.stderr.strip().splitlines()[-1]
        assert f"HTTP {status}" in line and "again" in line, line
        assert vast.api_key not in out(r)
    assert not fake.live_instances()


def test_start_restarts_a_dead_watchdog_and_no_run_starts_without_one(vast, fake_trainer):
    """The watchdog `up` started can die (killed, OOM, a container restart without onstart): `start`
    starts it again, and refuses to train where it cannot run."""
    vast.fake.add_offer()
    fake_trainer.behave(lines=50, delay=0.1)
    try:
        _restart_then_refuse(vast)
    finally:
        wd = vast.project.workspace / ".watchdog"
        if wd.is_file():
            wd.unlink()
        vast.run("down", "--force")


def _restart_then_refuse(vast):
    import os
    import shutil
    import signal
    import time

    for cmd in ("up", "sync"):
        r = vast.run(cmd)
        assert r.returncode == 0, (cmd, out(r))
    wd = vast.project.workspace / ".watchdog"
    os.kill(int((wd / "watchdog.pid").read_text()), signal.SIGKILL)
    time.sleep(0.3)
    r = vast.run("start")
    assert r.returncode == 0, out(r)
    assert "watchdog is not running on the instance: starting it" in r.stderr
    info = json.loads(vast.run("status", "--json").stdout)
    assert info["watchdog"]["running"] is True, info["watchdog"]
    vast.run("stop")

    # a watchdog that cannot be installed: no run starts
    os.kill(int((wd / "watchdog.pid").read_text()), signal.SIGKILL)
    time.sleep(0.3)
    shutil.rmtree(wd)
    wd.write_text("not a folder")  # mkdir -p .watchdog fails on the host
    runs_before = set(vast.state().get("runs") or {})
    r = vast.run("start")
    assert r.returncode == 2 and "no run starts without it" in r.stderr, out(r)
    assert len(r.stderr.strip().splitlines()[-1]) < 400 and "Traceback" not in r.stderr
    assert set(vast.state().get("runs") or {}) == runs_before


def test_status_shows_a_refused_instance_key(vast):
    vast.fake.add_offer()
    vast.fake.refuse_instance_key = 10_000  # every call the watchdog makes with CONTAINER_API_KEY: 401
    try:
        r = vast.run("up")
        assert r.returncode == 0, out(r)
        import time

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            table = vast.run("status")
            if "watchdog API" in table.stdout:
                break
            time.sleep(0.5)
        assert "watchdog API" in table.stdout and "401" in table.stdout, table.stdout
        assert "running (pid" in table.stdout  # refused, not gone: it keeps watching
        info = json.loads(vast.run("status", "--json").stdout)["watchdog"]
        assert info["api"]["ok"] is False and info["api"]["status"] == 401
    finally:
        vast.run("down", "--force")
