"""The on-instance watchdog (deploy/host/shipped/watchdog.py), run as the instance runs it, against the fake API.

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

from deploy.host.shipped import watchdog
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
    assert not [q for q in fake_vast.requests_by("instance") if q["method"] != "GET"]  # it only checked its key
    assert status["api"]["ok"] is True


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
    from deploy.host.layout import Layout

    script = run_script(Layout("/workspace"), config, "r1", resume=False, skip_extract=True, env={})
    resumed = watchdog.resume_script(script)
    train = [ln for ln in resumed.splitlines() if "-m trainer train" in ln]
    assert len(train) == 1 and "--resume" in train[0] and "--epochs 3" in train[0]
    assert watchdog.resume_script("echo nothing to see") is None


# -- it outlives everything but its instance, and sees all real activity ------------------------
def creds(fake_vast, iid, key) -> dict:
    return {"CONTAINER_API_KEY": key, "CONTAINER_ID": str(iid)}


def test_a_state_file_it_cannot_write_does_not_kill_it(fake_vast, instance, tmp_path):
    """A full disk (what typically crashes training) made its state.json write raise and the
    watchdog die, leaving the idle instance billing."""
    iid, key = instance
    home = setup_watch(tmp_path, fake_vast, iid)
    ended_run(home)
    (home / "state.json.tmp").mkdir()  # every write of state.json now fails, as on a full disk
    (home / "status.json.tmp").mkdir()
    r = run_watchdog(home, creds(fake_vast, iid, key))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert "cannot write state.json" in r.stdout
    assert fake_vast._status(fake_vast.instances[iid])[1] == "stopped"


def test_a_host_side_download_or_venv_build_is_activity(fake_vast, instance, tmp_path):
    iid, key = instance
    home = setup_watch(tmp_path, fake_vast, iid, idle_grace_minutes=0.01)
    ws = home.parent
    ended_run(home)
    import os
    import time

    old = time.time() - 3600
    os.utime(ws / "runs" / "r1" / "exit_status", (old, old))
    # what deploy/sync.py starts on the host: download_dataset.py, then `pip install` into the auto-venv
    for argv, what in ((["--dest", f"{ws}/dataset", "--work", f"{ws}/.download"], "dataset download"),
                       ([f"{ws}/venv/bin/python", "-m", "pip", "install", "x"], "virtualenv build")):
        worker = subprocess.Popen(["sh", "-c", "sleep 60", "python3", *argv])
        try:
            time.sleep(0.2)
            r = run_watchdog(home, creds(fake_vast, iid, key), 60, "--once")
        finally:
            worker.kill()
            worker.wait()
        assert r.returncode == 0, r.stdout + r.stderr
        assert fake_vast._status(fake_vast.instances[iid])[1] == "running", (what, r.stdout)
        assert what in json.loads((home / "status.json").read_text())["activity"]
    assert not [q for q in fake_vast.requests_by("instance") if q["method"] != "GET"]


def interrupted_run(home: Path, name: str = "r1") -> Path:
    run = home.parent / "runs" / name
    run.mkdir()
    (run / "run.sh").write_text("#!/bin/sh\nenv > env.txt\ntrue -m trainer train --epochs 1\n")
    (run / "pid").write_text("999999\n")  # gone: the instance was stopped under it
    return run


def test_a_capped_instance_does_not_relaunch_training_so_fetch_can_finish(fake_vast, instance, tmp_path):
    iid, key = instance
    home = setup_watch(tmp_path, fake_vast, iid, max_hours=0.5, rented_since=1.0, auto_resume=True,
                       idle_grace_minutes=1)
    run = interrupted_run(home)
    r = run_watchdog(home, creds(fake_vast, iid, key), 60, "--once")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (run / "run-resume.sh").exists(), "training relaunched on a capped instance"
    assert "NOT relaunched" in r.stdout
    # stays up (for the fetch that started it) for one grace period, then the cap stops it
    assert fake_vast._status(fake_vast.instances[iid])[1] == "running"
    status = json.loads((home / "status.json").read_text())
    assert status["will_stop"]["rule"].startswith("cap reached")


def test_a_relaunched_run_does_not_inherit_the_instance_key(fake_vast, instance, tmp_path):
    import time

    iid, key = instance
    home = setup_watch(tmp_path, fake_vast, iid, auto_resume=True, idle_grace_minutes=1)
    run = interrupted_run(home)
    r = run_watchdog(home, creds(fake_vast, iid, key), 60, "--once")
    assert r.returncode == 0, r.stdout + r.stderr
    deadline = time.monotonic() + 20
    while not (run / "env.txt").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    env = (run / "env.txt").read_text()
    assert "CONTAINER_ID" in env and "CONTAINER_API_KEY" not in env and key not in env


def test_status_json_says_which_rule_stops_it_and_when(fake_vast, instance, tmp_path):
    import time

    iid, key = instance
    home = setup_watch(tmp_path, fake_vast, iid, idle_grace_minutes=10, max_hours=12)
    ended_run(home)
    t0 = time.time()
    r = run_watchdog(home, creds(fake_vast, iid, key), 60, "--once")
    assert r.returncode == 0
    status = json.loads((home / "status.json").read_text())
    assert status["will_stop"]["rule"] == "idle_grace_minutes"
    assert t0 + 9 * 60 < status["will_stop"]["at"] < t0 + 11 * 60
    assert status["pid"] > 0 and status["at"] >= t0 and status["last_stop_attempt"] is None


# -- issue 20: a watchdog that needs nothing; issue 23 item 8: it validates its state ---------------
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's: no vastai, like every Python of Vast's TensorFlow image


def test_it_runs_on_a_python_without_the_vastai_sdk(fake_vast, instance, tmp_path):
    """vast-ai/base-image installs no vastai package in any Python (Dockerfile:283-293: the CLI is a git
    clone run as /opt/instance-tools/bin/vastai); the watchdog exited there and the guards were off."""
    assert subprocess.run([SYSTEM_PYTHON, "-c", "import vastai"], capture_output=True).returncode != 0
    iid, key = instance
    home = setup_watch(tmp_path, fake_vast, iid)
    ended_run(home)
    r = subprocess.run([SYSTEM_PYTHON, str(WATCHDOG), "--config", str(home / "config.json")],
                       env={"PATH": "/usr/bin:/bin", **creds(fake_vast, iid, key)}, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert fake_vast._status(fake_vast.instances[iid])[1] == "stopped"
    stop = [q for q in fake_vast.requests_by("instance") if q["method"] == "PUT"]
    assert stop and stop[-1]["path"] == f"/api/v0/instances/{iid}/" and stop[-1]["body"] == {"state": "stopped"}


def test_a_refused_key_is_retried_with_backoff_and_shown_never_taken_for_a_gone_instance(fake_vast, instance,
                                                                                        tmp_path):
    iid, key = instance
    home = setup_watch(tmp_path, fake_vast, iid, poll_seconds=0.1, idle_grace_minutes=0)
    ended_run(home)
    fake_vast.refuse_instance_key = 3  # the next 3 requests with the instance key answer 401
    r = run_watchdog(home, creds(fake_vast, iid, key), 60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert fake_vast._status(fake_vast.instances[iid])[1] == "stopped"  # it kept trying, and it worked
    assert "401" in r.stdout and "no longer exists" not in r.stdout
    times = [q["at"] for q in fake_vast.requests_by("bad")]
    assert len(times) == 3
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[1] > gaps[0] * 1.3 and gaps[0] >= 0.19, gaps  # backing off (0.2 s, 0.4 s), not at the poll rate


def test_status_json_shows_a_refused_key(fake_vast, instance, tmp_path):
    iid, key = instance
    home = setup_watch(tmp_path, fake_vast, iid, idle_grace_minutes=10)
    fake_vast.refuse_instance_key = 100
    r = run_watchdog(home, creds(fake_vast, iid, key), 60, "--once")
    assert r.returncode == 0, r.stdout + r.stderr
    api = json.loads((home / "status.json").read_text())["api"]
    assert api["ok"] is False and "401" in api["error"] and api["retry_at"] > api["at"]


def watch_while_training(home: Path, env: dict) -> subprocess.CompletedProcess:
    """Run the watchdog while a run (as deploy/start.py's run.sh looks to /proc) trains."""
    run = home.parent / "runs" / "r2"
    run.mkdir()
    trainer = subprocess.Popen(["sh", "-c", "sleep 60", str(run / "run.sh"), RUN_MARK])
    try:
        (run / "pid").write_text(str(trainer.pid))
        return run_watchdog(home, env)
    finally:
        trainer.kill()
        trainer.wait()


@pytest.mark.parametrize("state", ["null", "[]", '"x"', '{"run_seconds": "12h"}', '{"run_seconds": NaN}',
                                   '{"run_seconds": Infinity}', '{"run_seconds": -5}', '{"run_seconds": true}'])
def test_a_wrong_state_file_never_stops_the_watchdog_and_the_caps_still_fire(fake_vast, instance, tmp_path, state):
    iid, key = instance
    # rented since the epoch: whatever state.json says, the billed time is far past max_hours
    home = setup_watch(tmp_path, fake_vast, iid, max_hours=0.5, rented_since=1.0, idle_grace_minutes=60)
    (home / "state.json").write_text(state)
    r = watch_while_training(home, creds(fake_vast, iid, key))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert "state.json" in r.stdout  # it says it ignored what it could not use
    assert "max_hours" in json.loads((home / "stopped.json").read_text())["reason"]
    assert fake_vast._status(fake_vast.instances[iid])[1] == "stopped"


@pytest.mark.parametrize("bad", [{"max_hours": float("nan")}, {"max_hours": "12"}, {"budget_usd": -1},
                                 {"idle_grace_minutes": None}, {"price_per_hour": "x"}])
def test_a_wrong_config_value_is_said_and_the_valid_caps_still_fire(fake_vast, instance, tmp_path, bad):
    iid, key = instance
    cfg = {"max_hours": 0.5, "budget_usd": 30, "rented_since": 1.0, "idle_grace_minutes": 60, **bad}
    if "max_hours" in bad:
        cfg["budget_usd"] = 0.01  # the valid cap that must still fire
    home = setup_watch(tmp_path, fake_vast, iid, **cfg)
    r = watch_while_training(home, creds(fake_vast, iid, key))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert "config.json" in r.stdout and next(iter(bad)) in r.stdout
    assert fake_vast._status(fake_vast.instances[iid])[1] == "stopped"


def test_the_watchdog_source_is_python_3_8_and_standard_library_only():
    """It runs on whatever Python the image has (Vast's: /usr/bin/python3 of Ubuntu 22.04, 3.10, and a conda
    3.10 in /venv/main; base-image README: any of 3.7-3.14 by tag): no third-party import, no syntax or
    builtin API newer than 3.8."""
    import ast

    from tests.deploy.py38 import newer_than_38

    shipped = sorted(WATCHDOG.parent.glob("*.py"))  # deploy/host/shipped/: the watchdog, runstate.py, the download
    assert WATCHDOG in shipped and WATCHDOG.parent / "runstate.py" in shipped
    for path in shipped:
        src = path.read_text()
        tree = ast.parse(src, feature_version=(3, 8))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for name in names:
                    top = name.split(".")[0]
                    assert (top in sys.stdlib_module_names or top in ("runstate", "__future__")
                            or name == "deploy.host.shipped" or name.startswith("deploy.host.shipped.")), (path, name)
        assert newer_than_38(tree) == [], path
