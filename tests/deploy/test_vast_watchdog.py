"""The on-instance watchdog (deploy/watchdog.py), run as the instance runs it, against the fake API.

It must stop the instance with the instance's own key (CONTAINER_API_KEY) only, never
with the user's key, even when VAST_API_KEY happens to be in its environment.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from vastai import VastAI

from deploy import watchdog
from deploy.start import RUN_MARK, run_script

WATCHDOG = Path(watchdog.__file__)


@pytest.fixture
def instance(fake_vast):
    """A running instance rented with the user's key; -> (id, its CONTAINER_API_KEY)."""
    offer = fake_vast.add_offer()
    sdk = VastAI(api_key=fake_vast.api_key, server_url=fake_vast.url)
    r = sdk.create_instance(offer["id"], image="img:1", disk=50, env={}, label="t", ssh=True,
                            direct=True, cancel_unavail=True, onstart_cmd="true")
    yield r["new_contract"], r["instance_api_key"]
    if not fake_vast.instances[r["new_contract"]].destroyed:
        sdk.destroy_instance(r["new_contract"])


def setup_watch(tmp_path, fake, iid, **cfg) -> Path:
    ws = tmp_path / "ws"
    (ws / "runs").mkdir(parents=True)
    home = ws / ".watchdog"
    home.mkdir()
    config = {"instance_id": iid, "server_url": fake.url, "price_per_hour": 1.0, "rented_since": None,
              "max_hours": 12, "budget_usd": 30, "idle_grace_minutes": 0.01, "workspace": str(ws),
              "poll_seconds": 0.1, "watch_ssh_sessions": False}
    config.update(cfg)
    (home / "config.json").write_text(json.dumps(config))
    return home


def run_watchdog(home: Path, env: dict, timeout: float = 60, *extra) -> subprocess.CompletedProcess:
    full = {"PATH": "/usr/bin:/bin", **env}
    return subprocess.run([sys.executable, str(WATCHDOG), "--config", str(home / "config.json"), *extra],
                          env=full, capture_output=True, text=True, timeout=timeout)


def ended_run(home: Path, name: str = "r1") -> None:
    run = home.parent / "runs" / name
    run.mkdir()
    (run / "exit_status").write_text("0\n")


def test_stops_an_idle_instance_with_the_container_key_only(fake_vast, instance, tmp_path):
    iid, key = instance
    home = setup_watch(tmp_path, fake_vast, iid)
    ended_run(home)
    before = len(fake_vast.requests_by("user"))
    r = run_watchdog(home, {"CONTAINER_API_KEY": key, "CONTAINER_ID": str(iid), "VAST_API_KEY": fake_vast.api_key})
    assert r.returncode == 0, r.stdout + r.stderr
    assert fake_vast._status(fake_vast.instances[iid])[1] == "stopped"  # stopped, not destroyed
    assert not fake_vast.instances[iid].destroyed
    assert len(fake_vast.requests_by("user")) == before  # the user's key was never used
    stops = [q for q in fake_vast.requests_by("instance") if q["body"] == {"state": "stopped"}]
    assert stops and stops[0]["path"] == f"/api/v0/instances/{iid}/"
    reason = json.loads((home / "stopped.json").read_text())["reason"]
    assert "the run ended" in reason and "idle_grace_minutes" in reason
    assert key not in r.stdout and fake_vast.api_key not in r.stdout


def test_budget_cap_stops_even_while_training_runs(fake_vast, instance, tmp_path):
    iid, key = instance
    home = setup_watch(tmp_path, fake_vast, iid, price_per_hour=100.0, budget_usd=0.01, idle_grace_minutes=60)
    run = home.parent / "runs" / "r2"
    run.mkdir()
    # what deploy/start.py's run looks like: sh <run dir>/run.sh deploy-run.sh
    trainer = subprocess.Popen(["sh", "-c", "sleep 60", str(run / "run.sh"), RUN_MARK])
    try:
        (run / "pid").write_text(str(trainer.pid))
        r = run_watchdog(home, {"CONTAINER_API_KEY": key, "CONTAINER_ID": str(iid)})
    finally:
        trainer.kill()
        trainer.wait()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "budget_usd" in json.loads((home / "stopped.json").read_text())["reason"]
    assert fake_vast._status(fake_vast.instances[iid])[1] == "stopped"


def test_a_running_training_and_a_recent_fetch_keep_it_running(fake_vast, instance, tmp_path):
    iid, key = instance
    home = setup_watch(tmp_path, fake_vast, iid, idle_grace_minutes=1)
    ended_run(home)
    import os
    import time

    old = time.time() - 3600
    os.utime(home.parent / "runs" / "r1" / "exit_status", (old, old))  # ended an hour ago...
    (home / "activity").touch()  # ... but fetched just now
    r = run_watchdog(home, {"CONTAINER_API_KEY": key, "CONTAINER_ID": str(iid)}, 60, "--once")
    assert r.returncode == 0 and not (home / "stopped.json").exists()
    assert fake_vast._status(fake_vast.instances[iid])[1] == "running"  # never asked to stop
    status = json.loads((home / "status.json").read_text())
    assert status["runs"] == {"r1": "ended"} and status["idle_seconds"] < 60
    assert not fake_vast.requests_by("instance")


def test_instance_key_cannot_touch_other_instances(fake_vast, instance):
    iid, key = instance
    other = fake_vast.add_offer()
    sdk = VastAI(api_key=key, server_url=fake_vast.url, retry=1)
    import requests

    with pytest.raises(requests.HTTPError) as e:
        sdk.create_instance(other["id"], image="x", disk=10, env={}, label="x", onstart_cmd="", cancel_unavail=True)
    assert e.value.response.status_code == 403


def test_without_a_container_key_it_says_the_guards_are_off(fake_vast, instance, tmp_path):
    iid, _ = instance
    home = setup_watch(tmp_path, fake_vast, iid)
    r = run_watchdog(home, {"VAST_API_KEY": fake_vast.api_key})
    assert r.returncode == 2 and "no CONTAINER_API_KEY" in r.stdout
    assert not fake_vast.requests_by("user")[1:]  # only the fixture's create


def test_interrupted_run_is_resumed_from_its_checkpoint():
    config = {"remote": {"python": "python3"}, "train": {"config": "configs/train.yaml", "args": ["--epochs", "3"]}}
    from deploy.layout import Layout

    script = run_script(Layout("/workspace"), config, "r1", resume=False, skip_extract=True, env={})
    resumed = watchdog.resume_script(script)
    train = [ln for ln in resumed.splitlines() if "-m trainer train" in ln]
    assert len(train) == 1 and "--resume" in train[0] and "--epochs 3" in train[0]
    assert watchdog.resume_script("echo nothing to see") is None
