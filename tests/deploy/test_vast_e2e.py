"""`make deploy` -> `make logs` -> (the watchdog stops the idle instance) -> `make fetch` -> `make destroy`,
on provider vast: the real SDK against the fake API, the fixture's sshd as the instance.

The sshd `SetEnv`s CONTAINER_API_KEY into every session, as Vast.ai puts it into every
container, so the watchdog that `up` installs really runs and really stops the instance.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.deploy.conftest import out


@pytest.mark.slow
def test_deploy_logs_idle_stop_fetch_destroy_leaves_nothing_rented(vast, fake_trainer):
    fake = vast.fake  # the fixture's sshd hands every session the instance's key (CONTAINER_API_KEY)
    fake.add_offer(dph_base=0.9)
    vast.set(idle_grace_minutes=0.15, watchdog_poll_seconds=0.3)
    fake_trainer.behave(lines=4, delay=0.3)

    for cmd in ("up", "sync", "start"):  # make deploy
        r = vast.run(cmd)
        assert r.returncode == 0, f"{cmd}: {out(r)}"
        assert "watchdog is not running" not in r.stderr
    (inst,) = fake.live_instances()
    r = vast.run("logs", "--follow", timeout=120)  # make logs: until the run ends
    assert r.returncode == 0, out(r)
    assert "line 4 of 4" in r.stdout

    # nobody fetches: within the grace period the watchdog stops the instance by itself
    deadline = time.monotonic() + 90
    while fake._status(inst)[1] != "stopped" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert fake._status(inst)[1] == "stopped", (vast.project.workspace / ".watchdog" / "watchdog.log").read_text()
    assert not inst.destroyed
    by_instance = fake.requests_by("instance")
    assert by_instance and all(q["path"] == f"/api/v0/instances/{inst.id}/" for q in by_instance)
    assert r.returncode == 0

    fake.restart_lag = 0.5  # as on Vast.ai, the started instance reads `exited` while it waits for its GPUs
    r = vast.run("fetch")  # make fetch: starts it again, fetches, says to destroy it
    assert r.returncode == 0, out(r)
    assert "starting it again" in r.stderr and "deploy down" in r.stderr
    run = vast.state()["current_run"]
    results = vast.project.cwd / "runs" / run
    assert json.loads((results / "metrics.json").read_text())["accuracy"] == 0.75
    assert (results / "best_model.keras").stat().st_size == 200_000

    r = vast.run("down")  # make destroy: allowed, the results are here
    assert r.returncode == 0, out(r)
    assert "confirmed gone" in r.stdout
    assert not fake.live_instances()
    # the user's key never reached the instance or .deploy/
    for root in (vast.project.workspace, vast.project.cwd / ".deploy"):
        for f in root.rglob("*"):
            if f.is_file():
                assert fake.api_key.encode() not in f.read_bytes(), f
    assert all(q["auth"] in ("user", "instance") for q in fake.requests)
