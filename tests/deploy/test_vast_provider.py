"""Provider `vast` end to end through `python -m deploy`: the real vastai SDK against the fake
Vast.ai API (tests/deploy/fake_vast.py), instances whose SSH endpoint is the fixture's sshd.

The sshd starts with an EMPTY authorized_keys: only the key `up` attaches through the API
(POST /instances/<id>/ssh/) lets anyone in, as on a fresh Vast.ai instance.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from tests.deploy.conftest import REPO, out


# -- offers -----------------------------------------------------------------------------------
def test_offers_sends_the_filters_with_operators_and_hides_what_fails_them(vast):
    cheap_flaky = vast.fake.add_offer(dph_base=0.40, reliability=0.90, reliability2=0.90)
    good = vast.fake.add_offer(dph_base=0.90)
    pricey = vast.fake.add_offer(dph_base=2.50)
    r = vast.run("offers")
    assert r.returncode == 0, out(r)
    q = vast.fake.searches[0]
    assert q["gpu_name"] == {"in": ["RTX 5000Ada"]} and q["num_gpus"] == {"eq": 2}
    assert q["reliability"] == {"gte": 0.98} and q["dph_total"] == {"lte": 2.0}
    assert q["disk_space"] == {"gte": 80} and q["allocated_storage"] == 80.0
    assert q["inet_down"] == {"gte": 200} and q["cuda_max_good"] == {"gte": 12.2}
    assert q["direct_port_count"] == {"gte": 1} and q["verified"] == {"eq": True}
    assert q["rentable"] == {"eq": True} and q["rented"] == {"eq": False} and q["type"] == "on-demand"
    assert q["order"][0] == ["dph_total", "asc"]
    assert str(good["id"]) in r.stdout
    assert str(cheap_flaky["id"]) not in r.stdout and str(pricey["id"]) not in r.stdout
    # $/h includes the 80 GB disk: 0.90 + 0.15 $/GB/month * 80 / 720 = 0.9167
    assert "$0.92" in r.stdout and "est. job" in r.stdout
    assert vast.api_key not in out(r)
    assert all(req["auth"] == "user" for req in vast.fake.requests)


def test_fallback_gpu_models_and_dlperf_order(vast):
    vast.set(gpu_fallbacks=["RTX A6000"], order_by="dlperf_per_dollar")
    a6000 = vast.fake.add_offer(gpu_name="RTX A6000", dph_base=1.2, dlperf=120.0)
    vast.fake.add_offer(dph_base=0.9, dlperf=60.0)
    r = vast.run("offers")
    assert r.returncode == 0, out(r)
    assert vast.fake.searches[0]["gpu_name"] == {"in": ["RTX 5000Ada", "RTX A6000"]}
    assert vast.fake.searches[0]["order"][0] == ["dlperf_per_dphtotal", "desc"]
    rows = [ln for ln in r.stdout.splitlines() if "x RTX" in ln and "│" in ln]
    assert str(a6000["id"]) in rows[0]  # best DLPerf per dollar first, though dearer per hour


def test_no_offer_matches_names_the_filter_that_emptied_the_list(vast):
    vast.fake.add_offer(dph_base=2.40)
    vast.fake.add_offer(dph_base=2.90)
    r = vast.run("offers")
    assert r.returncode == 2
    line = r.stderr.strip().splitlines()[-1]
    assert "max_price_per_hour" in line and "2 offer(s)" in line and "$2.42/h" in line
    assert "min_reliability" not in line
    r = vast.run("up")
    assert r.returncode == 2 and "max_price_per_hour" in r.stderr
    assert not vast.fake.create_bodies


def test_no_offer_with_that_gpu_at_all(vast):
    vast.fake.add_offer(gpu_name="RTX 4090", num_gpus=1)
    r = vast.run("offers")
    assert r.returncode == 2 and "gpu_name" in r.stderr and "gpu_fallbacks" in r.stderr


def test_requests_without_the_right_bearer_key_are_refused(vast):
    vast.fake.add_offer()
    r = vast.run("offers", key="not-the-key")
    assert r.returncode == 2 and "rejected the API key" in r.stderr
    assert "not-the-key" not in out(r)
    assert vast.fake.requests and all(req["auth"] == "bad" for req in vast.fake.requests)
    r = vast.run("offers", key=None)
    assert r.returncode == 2 and "VAST_API_KEY" in r.stderr and "Traceback" not in r.stderr
    # the vastai CLI's own key file (`vastai set api-key`) works too: $XDG_CONFIG_HOME or ~/.config
    for folder in (vast.config_home / "vastai", vast.config_home / ".config" / "vastai"):
        folder.mkdir(parents=True)
        (folder / "vast_api_key").write_text(vast.api_key + "\n")
    r = vast.run("offers", key=None)
    assert r.returncode == 0, out(r)
    assert vast.fake.requests[-1]["auth"] == "user" and vast.api_key not in out(r)


def test_dry_run_prints_the_create_request_and_rents_nothing(vast):
    offer = vast.fake.add_offer(dph_base=0.9)
    vast.set(env={"WANDB_MODE": "offline"})
    for cmd in (("up", "--dry-run"), ("run", "--dry-run")):
        r = vast.run(*cmd)
        assert r.returncode == 0, out(r)
        assert f"would rent offer {offer['id']}" in r.stdout
        body = json.loads(r.stdout[r.stdout.index("{\n"): r.stdout.index("\n}") + 2])
        assert body["image"] == "registry.example/violence-trainer:1.0" and body["disk"] == 80.0
        assert body["runtype"] == "ssh_direc ssh_proxy" and body["cancel_unavail"] is True
        assert body["label"].startswith("vtrain-project-") and body["env"] == {"WANDB_MODE": "offline"}
        assert "CONTAINER_API_KEY" in body["onstart"] and vast.api_key not in out(r)
        assert "nothing was rented" in r.stdout
    assert not vast.fake.create_bodies and not vast.fake.instances


# -- up ------------------------------------------------------------------------------------------
def test_up_rents_the_cheapest_good_offer_attaches_the_key_and_records_it(vast):
    vast.fake.add_offer(dph_base=0.40, reliability=0.90, reliability2=0.90)  # cheapest, but flaky
    good = vast.fake.add_offer(dph_base=0.90)
    vast.fake.ssh_direct = ("127.0.0.1", 9)  # direct port closed: the proxy is the fall-back
    r = vast.run("up")
    assert r.returncode == 0, out(r)
    assert len(vast.fake.create_bodies) == 1
    (inst,) = vast.fake.live_instances()
    assert inst.offer["id"] == good["id"]
    body = inst.body
    assert body["env"] == {"TF_CPP_MIN_LOG_LEVEL": "2"} and body["label"] == vast.state()["vast"]["label"]
    assert open(vast.sshd.identity_file + ".pub").read().strip() in inst.attached_keys
    st = vast.state()
    assert st["vast"]["instance_id"] == inst.id and st["provider"] == "vast"
    assert st["host"]["port"] == vast.sshd.port and st["host"]["fallbacks"] == [{"host": "127.0.0.1", "port": 9}]
    assert "loading" in r.stderr and "running" in r.stderr  # status_msg shown as it changed
    # the fixture's sshd hands sessions the instance key, as Vast.ai does: the watchdog is up
    assert "cost watchdog is not running" not in r.stderr
    raw = (vast.project.cwd / ".deploy" / "state.json").read_text()
    assert vast.api_key not in raw and inst.api_key not in raw
    # the instance got the watchdog, and nothing secret
    wd = vast.project.workspace / ".watchdog"
    cfg = json.loads((wd / "config.json").read_text())
    assert cfg["instance_id"] == inst.id and cfg["idle_grace_minutes"] == 30
    assert vast.api_key not in (wd / "config.json").read_text()
    # a second `up` reuses it
    r = vast.run("up")
    assert r.returncode == 0, out(r)
    assert len(vast.fake.create_bodies) == 1
    r = vast.run("down", "--force")
    assert r.returncode == 0, out(r)
    assert "destroyed instance" in r.stdout and not vast.fake.live_instances()


def test_offer_taken_at_create_moves_on_to_the_next(vast):
    first = vast.fake.add_offer(dph_base=0.5)
    second = vast.fake.add_offer(dph_base=0.6)
    vast.fake.gone_offers.add(first["id"])
    vast.fake.gone_status = 410
    r = vast.run("up")
    assert r.returncode == 0, out(r)
    assert "taken by someone else" in r.stderr
    assert [i.offer["id"] for i in vast.fake.live_instances()] == [second["id"]]
    assert vast.run("down", "--force").returncode == 0


def test_rate_limited_requests_are_waited_out(vast):
    vast.fake.add_offer()
    vast.fake.rate_limit_remaining = 1  # once: the SDK's own retry absorbs it
    r = vast.run("offers")
    assert r.returncode == 0, out(r)
    assert vast.fake.rate_limit_remaining == 0
    # longer than the SDK's 3 tries, on the create request: our back-off waits it out
    vast.fake.rate_limit_remaining, vast.fake.rate_limit_paths = 4, ("/api/v0/asks/",)
    r = vast.run("up")
    assert r.returncode == 0, out(r)
    assert "rate-limiting" in r.stderr and len(vast.fake.live_instances()) == 1
    assert vast.run("down", "--force").returncode == 0


def test_instance_that_exits_while_loading_is_destroyed_and_the_next_offer_used(vast):
    bad = vast.fake.add_offer(dph_base=0.5, behaviour="exit_while_loading")
    good = vast.fake.add_offer(dph_base=0.7)
    r = vast.run("up")
    assert r.returncode == 0, out(r)
    dead = [i for i in vast.fake.instances.values() if i.offer["id"] == bad["id"]]
    assert len(dead) == 1 and dead[0].destroyed
    assert [i.offer["id"] for i in vast.fake.live_instances()] == [good["id"]]
    log = vast.project.cwd / ".deploy" / "vast-logs" / f"instance-{dead[0].id}.log"
    assert "OCI runtime create failed" in r.stderr and log.is_file() and "exited" in log.read_text()
    assert vast.run("down", "--force").returncode == 0


def test_instance_stuck_loading_past_the_timeout_is_destroyed_leaving_nothing_rented(vast):
    vast.fake.add_offer(behaviour="stuck_loading")
    vast.set(ready_timeout_minutes=0.02, max_attempts=1)
    r = vast.run("up")
    assert r.returncode == 2
    assert "still loading" in r.stderr and "nothing is rented" in r.stderr.splitlines()[-1]
    assert len(vast.fake.instances) == 1 and not vast.fake.live_instances()
    assert "vast" not in vast.state() and "host" not in vast.state()


def test_crash_between_create_and_state_write_is_found_by_label(vast):
    vast.fake.add_foreign_instances(30)  # more than one page of the paginated list
    vast.fake.add_offer(dph_base=0.5)
    vast.fake.add_offer(dph_base=0.6)
    crash = textwrap.dedent(f"""
        import os, sys
        import deploy.providers.vast.provider as v
        v.VastProvider._remember = lambda *a, **k: os._exit(137)  # killed right after the create answer
        from deploy.cli import main
        sys.exit(main(["--config", {str(vast.project.config_path)!r}, "up"]))
    """)
    r = subprocess.run([sys.executable, "-c", crash], cwd=vast.project.cwd, env=vast.project.env(vast.env()),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 137
    assert len(vast.fake.live_instances()) == 1 and "vast" not in json.loads(
        (vast.project.cwd / ".deploy" / "state.json").read_text() if (vast.project.cwd / ".deploy" / "state.json")
        .exists() else "{}")
    r = vast.run("up")
    assert r.returncode == 0, out(r)
    assert "found instance" in r.stderr and len(vast.fake.create_bodies) == 1
    assert vast.state()["vast"]["instance_id"] == vast.fake.live_instances()[0].id
    list_pages = [q for q in vast.fake.requests if q["path"] == "/api/v1/instances/"]
    assert any(q["query"].get("after_token") for q in list_pages)  # it followed next_token
    assert vast.run("down", "--force").returncode == 0
    assert len(vast.fake.live_instances(include_foreign=True)) == 30  # the user's other work untouched


# -- status, down, stopped and outbid instances --------------------------------------------------
def test_down_is_refused_before_fetch_and_status_shows_the_money(vast):
    vast.fake.add_offer()
    assert vast.run("up").returncode == 0
    from deploy.local.state import State

    State(vast.project.cwd / ".deploy").record_start("20250101-000000")  # as `start` records a run
    r = vast.run("down")
    assert r.returncode == 2 and "not been fetched" in r.stderr and "--force" in r.stderr
    assert len(vast.fake.live_instances()) == 1
    r = vast.run("status")
    assert r.returncode == 0, out(r)
    for words in ("$1.02", "spent", "projected", "budget", "time_rented"):  # 1.00 $/h + the 80 GB disk
        assert words in r.stdout, r.stdout
    r = vast.run("down", "--force")
    assert r.returncode == 0 and not vast.fake.live_instances()
    assert "vast" not in vast.state()


@pytest.mark.slow
def test_down_of_an_instance_that_no_longer_exists_cleans_up(vast):
    vast.fake.add_offer()
    assert vast.run("up").returncode == 0
    (inst,) = vast.fake.live_instances()
    inst.destroyed = True  # destroyed in the web console, or expired
    r = vast.run("down")
    assert r.returncode == 0 and "no longer exists" in r.stdout
    assert "vast" not in vast.state() and "host" not in vast.state()
    r = vast.run("down")
    assert r.returncode == 0 and "nothing is rented" in r.stdout


@pytest.mark.slow
def test_fetch_on_a_stopped_instance_starts_it_and_says_to_down_it(vast, fake_trainer):
    vast.fake.add_offer()
    assert vast.run("up").returncode == 0
    assert vast.run("sync").returncode == 0
    assert vast.run("start").returncode == 0
    run = vast.state()["current_run"]
    done = vast.project.remote_run_dir(run) / "exit_status"
    for _ in range(300):
        if done.exists():
            break
        time.sleep(0.1)
    (inst,) = vast.fake.live_instances()
    vast.fake._set_state(inst.id, "stopped")  # as the watchdog would
    vast.fake.restart_lag = 0.5  # started again, it reads `exited` a while (waiting for its GPUs)
    r = vast.run("status")  # answered from the API alone: a stopped host is not dialled
    assert r.returncode == 0 and "stopped (disk kept" in r.stdout and "not running" in r.stdout, out(r)
    r = vast.run("fetch")
    assert r.returncode == 0, out(r)
    assert "starting it again" in r.stderr and "deploy down" in r.stderr
    assert vast.fake._status(inst)[0] == "running"
    assert (vast.project.cwd / "runs" / run / "metrics.json").is_file()
    r = vast.run("down")  # fetched after the end: allowed without --force
    assert r.returncode == 0, out(r)


@pytest.mark.slow
def test_interruptible_rental_bids_and_an_outbid_instance_is_reported(vast):
    vast.fake.add_offer(min_bid=0.3)
    vast.fake.add_offer(min_bid=0.8)  # its minimum bid is above ours
    vast.set(bid_price=0.5)
    assert vast.run("up").returncode == 0
    (inst,) = vast.fake.live_instances()
    assert inst.body["price"] == 0.5 and vast.fake.searches[0]["type"] == "bid"
    assert vast.fake.searches[0]["min_bid"] == {"lte": 0.5}
    assert json.loads((vast.project.workspace / ".watchdog" / "config.json").read_text())["auto_resume"] is True
    vast.fake.outbid(inst.id)
    r = vast.run("sync")
    assert r.returncode == 2 and "outbid" in r.stderr and "--resume" in r.stderr
    r = vast.run("status")
    assert r.returncode == 0 and "outbid" in r.stdout, out(r)
    vast.fake.rebid_wins(inst.id)
    r = vast.run("up")  # running again: `up` finds it and checks SSH
    assert r.returncode == 0 and len(vast.fake.create_bodies) == 1, out(r)
    assert vast.run("down", "--force").returncode == 0


def test_config_mistakes_are_one_line(vast):
    vast.set(max_price=3)
    r = vast.run("offers")
    assert r.returncode == 2 and "vast.max_price" in r.stderr and "Traceback" not in r.stderr
    vast.project.config["vast"].pop("max_price")
    vast.set(env={"HF_TOKEN": "abc"})
    r = vast.run("up", "--dry-run")
    assert r.returncode == 2 and "secret" in r.stderr


def test_shipped_config_has_every_vast_key_and_the_placeholder_image_is_refused(tmp_path):
    import yaml

    from deploy.errors import UsageError
    from deploy.local.state import State
    from deploy.providers.vast.provider import VastProvider
    from deploy.providers.vast.settings import VAST_DEFAULTS, VastSettings

    shipped = yaml.safe_load(open(REPO / "configs" / "deploy.yaml"))["vast"]
    s = VastSettings.from_config(shipped)
    assert s.gpu_name == "RTX 5000Ada" and s.num_gpus == 2 and s.min_reliability == 0.98
    documented = {"max_price_per_hour", "max_hours", "budget_usd", "idle_grace_minutes", "bid_price",
                  "gpu_fallbacks", "order_by", "disk_gb", "min_inet_down_mbps", "min_cuda", "direct_ports"}
    assert documented <= set(shipped) <= set(VAST_DEFAULTS)
    p = VastProvider({"vast": shipped, "remote": {"workspace": "/workspace"}}, State(tmp_path / ".deploy"))
    with pytest.raises(UsageError, match="vast.image"):
        p._create_kwargs()
