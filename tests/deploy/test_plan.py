"""The job model (deploy/plan/job_model.py): which offer makes the whole job cheapest, phase by phase.

Offers are shaped like rows of the vendor spec's search response (vast-ai/docs,
api-reference/openapi/yaml/search_offers.yaml, `offers` example): only fields that row has.
"""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from deploy.plan import inputs, job_model, report


def spec_offer(**over) -> dict:
    """A search_offers row (the spec example's field names), 2 GPUs, priced per hour incl. disk."""
    row = {
        "id": 1, "gpu_name": "RTX 5000Ada", "num_gpus": 2, "cpu_cores": 32, "cpu_cores_effective": 16,
        "disk_bw": 1500.0, "disk_space": 500.0, "dlperf": 60.0, "dph_base": 0.9, "dph_total": 1.0,
        "dlperf_per_dphtotal": 60.0, "inet_down": 1000.0, "inet_up": 800.0, "inet_down_cost": 0.0,
        "inet_up_cost": 0.0, "reliability": 0.995, "reliability2": 0.995, "storage_cost": 0.15,
        "storage_total_cost": 0.0167, "total_flops": 130.0, "verification": "verified", "vericode": 1,
        "rentable": True, "rented": False, "geolocation": "Sweden, SE",
    }
    row.update(over)
    row["dlperf_per_dphtotal"] = row["dlperf"] / row["dph_total"]
    return row


# the cheapest hour sits behind a slow pipe; the pricier one is fast in every way
CHEAP_SLOW = spec_offer(id=101, dph_total=0.60, inet_down=200.0, total_flops=65.0, dlperf=30.0, cpu_cores_effective=8)
FAST = spec_offer(id=202, dph_total=0.80, inet_down=2000.0, total_flops=130.0, dlperf=60.0, cpu_cores_effective=16)
CATALOGUE = [CHEAP_SLOW, FAST]


def seedlike_job(upload_gb: float, videos: int = 15_398, uplink: float = 1000.0, **kw) -> job_model.Job:
    return job_model.Job(upload_bytes=int(upload_gb * 1e9), videos=videos, train_samples=int(videos * 0.7),
                    val_samples=int(videos * 0.15), epochs=kw.pop("epochs", 100), uplink_mbps=uplink,
                    image_bytes=int(kw.pop("image_gb", 3) * 1e9), **kw)


def test_a_large_local_dataset_makes_the_faster_pricier_offer_win():
    ranked = job_model.rank(CATALOGUE, seedlike_job(upload_gb=60))
    assert [o["id"] for o, _ in ranked] == [202, 101]
    cheap = dict((o["id"], e) for o, e in ranked)[101]
    assert cheap["dominant"] == "upload"  # 60 GB through 200 Mb/s is 40 minutes
    assert cheap["job_cost_usd"] > ranked[0][1]["job_cost_usd"]
    # ranking by the hour alone would have chosen the slow one
    assert job_model.rank(CATALOGUE, seedlike_job(upload_gb=60), order_by="price")[0][0]["id"] == 101


def test_a_tiny_dataset_lets_the_cheap_offer_win():
    # (the image comes through inet_down too: with a 1 GB image the slow pipe costs 40 s, not minutes)
    ranked = job_model.rank(CATALOGUE, seedlike_job(upload_gb=0.05, videos=200, epochs=5, image_gb=1))
    assert ranked[0][0]["id"] == 101
    # the same tiny job with a 7 GB image: the pull through 200 Mb/s (4.7 min) tips it to the fast offer
    assert job_model.rank(CATALOGUE, seedlike_job(upload_gb=0.05, videos=200, epochs=5, image_gb=7))[0][0]["id"] == 202


def test_a_host_side_download_takes_the_users_uplink_out_of_the_picture():
    local_slow = seedlike_job(upload_gb=20, uplink=10.0)
    local_fast = seedlike_job(upload_gb=20, uplink=10_000.0)
    assert (job_model.estimate(FAST, local_slow)["phases"]["upload"]
            > 10 * job_model.estimate(FAST, local_fast)["phases"]["upload"])
    url_slow = seedlike_job(upload_gb=0, uplink=10.0)
    url_slow.download_bytes = int(20e9)
    url_fast = seedlike_job(upload_gb=0, uplink=10_000.0)
    url_fast.download_bytes = int(20e9)
    assert job_model.estimate(FAST, url_slow)["phases"] == job_model.estimate(FAST, url_fast)["phases"]
    # 20 GB over the host's 2,000 Mb/s (80 s) plus unpacking at disk_bw 1,500 MB/s (13.3 s)
    assert job_model.estimate(FAST, url_slow)["phases"]["upload"] * 3600 == pytest.approx(80 + 20e9 / 1.5e9, abs=0.5)


def test_the_breakdown_sums_to_the_total_and_the_cost_is_price_times_hours():
    for offer in CATALOGUE:
        est = job_model.estimate(offer, seedlike_job(upload_gb=12))
        assert sum(est["phases"].values()) == pytest.approx(est["job_hours"], abs=1e-3)
        assert est["job_cost_usd"] == pytest.approx(offer["dph_total"] * est["job_hours"], abs=0.01)


def test_bandwidth_is_billed_both_ways():
    """billing.mdx:83: bandwidth "for every byte sent or received": the dataset and image in at
    inet_down_cost, the fetched results out at inet_up_cost ($/GB, the offer row's fields)."""
    job = seedlike_job(upload_gb=10, image_gb=2)
    down_only = job_model.estimate(spec_offer(inet_down_cost=0.01, inet_up_cost=0.0), job)
    both = job_model.estimate(spec_offer(inet_down_cost=0.01, inet_up_cost=2.0), job)
    assert down_only["bandwidth_usd"] == pytest.approx(12 * 0.01, abs=0.005)
    out_gb = job.result_bytes() / 1e9
    assert 0.02 < out_gb < 1  # best_model.keras (weights + Adam's moments) and the small results
    assert both["bandwidth_usd"] == pytest.approx(12 * 0.01 + out_gb * 2.0, abs=0.005)
    assert both["job_cost_usd"] - down_only["job_cost_usd"] == pytest.approx(out_gb * 2.0, abs=0.01)


def test_a_stopped_rows_prices_are_read_as_the_row_says_them():
    """show_instance.yaml: dph_base is the GPU's $/h, storage_total_cost the disk's; a stopped row whose
    dph_total no longer carries the GPU must not price the GPU at 0 (or the disk at the GPU's rate)."""
    from deploy.providers.vast import rows

    running = {"dph_base": 1.0, "dph_total": 1.0020740740740741, "storage_total_cost": 0.002074074074074074}
    assert rows.hourly_parts(running) == pytest.approx((1.0, 0.002074074074074074))
    stopped = {**running, "dph_total": 0.002074074074074074, "intended_status": "stopped"}
    assert rows.hourly_parts(stopped) == pytest.approx((1.0, 0.002074074074074074))
    no_base = {"dph_total": 0.5, "storage_total_cost": 0.1}
    assert rows.hourly_parts(no_base) == pytest.approx((0.4, 0.1))


def test_upload_goes_through_the_slower_of_the_two_pipes():
    job = seedlike_job(upload_gb=10, uplink=50.0)
    est = job_model.estimate(FAST, job)  # inet_down 2,000 Mb/s, uplink 50 Mb/s -> 10e9*8/50e6 = 1,600 s
    assert est["phases"]["upload"] * 3600 == pytest.approx(1600, rel=1e-3)
    est = job_model.estimate(CHEAP_SLOW, seedlike_job(upload_gb=60))
    assert job_model.bound(est).startswith("upload-bound: 40 min of ")


def test_extraction_is_bounded_by_decode_on_few_cores_and_by_the_gpu_on_many():
    job = seedlike_job(upload_gb=0, epochs=0)
    few = job_model.phase_seconds(spec_offer(cpu_cores_effective=2, total_flops=130.0), job)["extract"]
    many = job_model.phase_seconds(spec_offer(cpu_cores_effective=512, total_flops=130.0), job)["extract"]
    more_gpu = job_model.phase_seconds(spec_offer(cpu_cores_effective=512, total_flops=260.0), job)["extract"]
    assert few - job_model.EXTRACT_STARTUP_S == pytest.approx(15_398 / (2 * job_model.DECODE_VIDEOS_PER_S_PER_CORE))
    assert many < few and more_gpu < many  # GPU-bound once the cores are plenty


def test_dataset_cache_sends_only_the_cache_and_skips_extraction(tmp_path):
    cache = tmp_path / "cache"
    (cache / "features").mkdir(parents=True)
    (cache / "features" / "a.npy").write_bytes(b"x" * 3_000_000)
    cfg = {"dataset": {"path": str(tmp_path / "no-such-dataset"), "cache": str(cache)},
           "vast": {"image_gb": 3, "uplink_mbps": 40}, "train": {"config": None, "args": ["--epochs", "7"]}}
    job = inputs.job_from_config(cfg, lookups=False)
    assert job.upload_bytes == 3_000_000 and job.videos == 0 and job.epochs == 7
    assert job.uplink_mbps == 40 and job.image_bytes == 3_000_000_000
    assert job_model.estimate(FAST, job)["phases"]["extract"] == 0


def test_local_dataset_counts_videos_and_bytes(tmp_path):
    ds = tmp_path / "dataset"
    for cls in ("Violence", "NonViolence"):
        (ds / cls).mkdir(parents=True)
        for i in range(5):
            (ds / cls / f"v{i}.mp4").write_bytes(b"v" * 1000)
    (ds / "README.txt").write_text("not a video")
    job = inputs.job_from_config({"dataset": {"path": str(ds)}, "vast": {"image_gb": 1}, "train": {}},
                               measured={"uplink_mbps": 77, "uplink_how": "by sync"}, lookups=False)
    assert job.videos == 10 and job.upload_bytes == 10_000 + len("not a video")
    assert job.train_samples == 7 and job.uplink_mbps == 77
    assert "measured" in job.sources["uplink"]


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict = {}

    def _answer(self, body: bool):
        code, headers, payload = self.routes.get(self.path.split("?")[0], (404, {}, b""))
        if callable(payload):
            code, headers, payload = payload(self)
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", headers.get("Content-Length", str(len(payload))))
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def do_GET(self):
        self._answer(True)

    def do_HEAD(self):
        self._answer(False)

    def log_message(self, *a):
        pass


@pytest.fixture
def http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_size_comes_from_content_length(http_server):
    server, addr = http_server
    _Handler.routes = {"/rlvs.zip": (200, {"Content-Length": "123456789"}, b"")}
    cfg = {"dataset": {"url": f"http://{addr}/rlvs.zip", "path": None}, "vast": {"image_gb": 1}, "train": {}}
    job = inputs.job_from_config(cfg, env={})
    assert job.download_bytes == 123_456_789 and job.upload_bytes == 0
    assert job.sources["download"] == "HTTP Content-Length"


def test_kaggle_size_comes_from_the_dataset_view(http_server):
    server, addr = http_server
    body = json.dumps({"ref": "owner/set", "totalBytes": 987654321}).encode()
    _Handler.routes = {"/api/v1/datasets/view/owner/set": (200, {"Content-Type": "application/json"}, body)}
    cfg = {"dataset": {"kaggle": "owner/set", "path": None}, "vast": {"image_gb": 1}, "train": {}}
    job = inputs.job_from_config(cfg, env={"KAGGLE_USERNAME": "u", "KAGGLE_KEY": "k",
                                         "DEPLOY_KAGGLE_API": f"http://{addr}/api/v1"})
    assert job.download_bytes == 987_654_321


def test_run_times_from_the_run_scripts_own_lines():
    log = "\n".join([
        "[deploy] 2026-12-01T10:00:00Z run r1 on box",
        "[deploy] 2026-12-01T10:00:05Z extract",
        "usable videos: 10, failed: 0, padded (short videos): 0",
        "[deploy] 2026-12-01T10:10:05Z train",
        "[deploy] 2026-12-01T10:40:05Z run ended with exit code 0",
    ])
    hist = "epoch,accuracy\n0,0.5\n1,0.6\n2,0.7\n"
    t = report.run_times(log, hist)
    assert t["train_start"] - t["extract_start"] == 600 and t["ended"] - t["train_start"] == 1800
    assert t["epochs"] == 3 and t["exit_code"] == "0" and t["videos"] == 10


def test_a_run_shorter_than_a_second_is_still_timed():
    # the run script stamps nanoseconds (GNU date %N); a shell whose date lacks %N leaves it unexpanded
    log = "\n".join([
        "[deploy] 2026-12-01T10:00:00.100000000Z train",
        "[deploy] 2026-12-01T10:00:00.850000000Z run ended with exit code 0",
    ])
    t = report.run_times(log)
    assert t["ended"] - t["train_start"] == pytest.approx(0.75, abs=1e-6)
    t = report.run_times("[deploy] 2026-12-01T10:00:00.%NZ train\n[deploy] 2026-12-01T10:00:02.NZ run ended with exit code 0")
    assert t["ended"] - t["train_start"] == 2


def test_a_finished_run_corrects_the_next_estimate(tmp_path):
    root = tmp_path / ".deploy"
    job = seedlike_job(upload_gb=1)
    est = job_model.estimate(FAST, job)
    report.remember_estimate(root, est, inputs.describe_inputs(job))
    report.record_sync(root, 1000.0, 1100.0, 500_000_000, "local")
    train_h = est["phases"]["train"]
    log = ("[deploy] 2026-12-01T10:00:00Z run r1 on box\n[deploy] 2026-12-01T10:00:00Z train\n"
           f"[deploy] {_iso(1796119200 + train_h * 2 * 3600)} run ended with exit code 0\n")
    out = []
    report.print_estimate_vs_actual(root, log, "epoch\n1\n", file=_Lines(out))
    text = "\n".join(out)
    assert "estimate vs actual" in text and "upload" in text and "train" in text
    m = report.measured(root)
    assert m["uplink_mbps"] == pytest.approx(500_000_000 * 8 / 1e6 / 100, rel=1e-3)  # 40 Mb/s, from the sync
    assert m["corrections"]["train"] == pytest.approx(2.0, rel=0.01)
    report.print_estimate_vs_actual(root, log, "epoch\n1\n", file=_Lines([]))  # status, then fetch
    assert report.measured(root)["corrections"]["train"] == m["corrections"]["train"]  # not compounded
    again = inputs.job_from_config({"dataset": {"path": None}, "vast": {"image_gb": 3}, "train": {}},
                                 measured=m, lookups=False)
    assert again.corrections["train"] == pytest.approx(2.0, rel=0.01) and again.uplink_mbps == m["uplink_mbps"]
    job.corrections = again.corrections
    assert job_model.estimate(FAST, job)["phases"]["train"] == pytest.approx(2 * train_h, rel=0.01)


def _iso(t: float) -> str:
    import time
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class _Lines:
    def __init__(self, out):
        self.out = out

    def write(self, s):
        if s.strip():
            self.out.append(s.rstrip("\n"))

    def flush(self):
        pass


# -- the CLI: the real vastai SDK against the fake API, and a run on the real sshd ---------------
def _offers_json(vast) -> list[dict]:
    from tests.deploy.conftest import out

    r = vast.run("offers", "--json")
    assert r.returncode == 0, out(r)
    return json.loads(r.stdout)


def test_offers_ranks_by_the_whole_jobs_cost(vast):
    from tests.deploy.conftest import out

    # rows come from the fake (fields of the spec's search_offers example); both pass min_inet_down_mbps 200
    cheap = vast.fake.add_offer(dph_base=0.50, inet_down=250.0, total_flops=65.0, cpu_cores_effective=8.0)
    fast = vast.fake.add_offer(dph_base=0.80, inet_down=2000.0, total_flops=130.0, cpu_cores_effective=16.0)
    vast.set(image_gb=1, uplink_mbps=1000)
    ds = vast.project.cwd / "dataset" / "Violence"
    ds.mkdir(parents=True)
    with open(ds / "big.mp4", "wb") as fh:  # 30 GB, sparse: counted by size, never read
        fh.truncate(30 * 10**9)
    rows = _offers_json(vast)
    assert [r["id"] for r in rows] == [fast["id"], cheap["id"]]
    for r in rows:
        assert set(r["phases"]) == {"upload", "pull", "extract", "train"}
        assert sum(r["phases"].values()) == pytest.approx(r["job_hours"], abs=1e-3)
        assert r["job_cost_usd"] == pytest.approx(r["price_per_hour"] * r["job_hours"] + r["bandwidth_usd"], abs=0.01)
    slow = rows[1]
    # 30e9 bytes * 8 / 250 Mb/s = 960 s through the slower pipe: the cheap hour costs more in all
    assert slow["phases"]["upload"] * 3600 == pytest.approx(960, abs=1) and slow["bound"].startswith("upload-bound")
    r = vast.run("offers")
    assert r.returncode == 0, out(r)
    assert "whole-job cost" in r.stdout and "upload-bound: 16 min of " in r.stdout
    assert f"1. offer {fast['id']}: upload" in r.stdout

    (ds / "big.mp4").unlink()
    (ds / "small.mp4").write_bytes(b"v" * 1_000_000)
    assert [r["id"] for r in _offers_json(vast)] == [cheap["id"], fast["id"]]
    vast.set(order_by="price")
    assert _offers_json(vast)[0]["id"] == cheap["id"]


@pytest.mark.slow
def test_estimate_vs_actual_after_a_run_on_the_real_sshd(vast, fake_trainer):
    from tests.deploy.conftest import out

    offer = vast.fake.add_offer(dph_base=0.9)
    vast.set(image_gb=1)
    fake_trainer.behave(lines=3, delay=0.2)
    for i in range(10):  # named like videos, so the model counts them (the fake trainer never opens them)
        (vast.project.cwd / "dataset" / f"clip{i}.mp4").write_bytes(b"v" * 1000)
    r = vast.run("up", "--dry-run")
    assert r.returncode == 0 and "estimate: $" in r.stdout and "-bound: " in r.stdout, out(r)
    for cmd in ("up", "sync", "start"):
        r = vast.run(cmd)
        assert r.returncode == 0, f"{cmd}: {out(r)}"
    plan_file = json.loads((vast.project.cwd / ".deploy" / "plan.json").read_text())
    assert plan_file["estimate"]["id"] == offer["id"]
    assert plan_file["measured"]["uplink_mbps"] > 0  # the probe after `up` (then maybe the sync)
    assert plan_file["sync"]["ended_at"] >= plan_file["sync"]["started_at"]
    r = vast.run("logs", "--follow", timeout=120)
    assert r.returncode == 0, out(r)
    r = vast.run("status")
    assert r.returncode == 0 and "estimate vs actual" in r.stdout, out(r)
    r = vast.run("fetch")
    assert r.returncode == 0, out(r)
    text = r.stdout
    assert f"estimate vs actual (offer {offer['id']}" in text
    lines = {ln.split()[0]: ln for ln in text.splitlines() if ln.startswith("  ") and ln.split()}
    for phase in ("upload", "pull", "extract", "train", "total"):
        assert phase in lines, text
        assert lines[phase].split()[-1] != "-" or phase == "train", lines[phase]
    assert "(3 epochs)" in lines["train"]
    corrections = json.loads((vast.project.cwd / ".deploy" / "plan.json").read_text())["measured"]["corrections"]
    assert set(corrections) >= {"train"}  # the next estimate starts from this run's figures
    assert vast.run("down").returncode == 0


def test_a_failed_run_teaches_nothing(tmp_path):
    root = tmp_path / ".deploy"
    est = job_model.estimate(FAST, seedlike_job(upload_gb=1))
    report.remember_estimate(root, est, "inputs")
    log = ("[deploy] 2026-12-01T10:00:00Z run r1 on box\n[deploy] 2026-12-01T10:00:00Z train\n"
           "[deploy] 2026-12-01T10:00:09Z run ended with exit code 1\n")
    lines = report.estimate_vs_actual(root, log, "")
    assert lines and lines[0].startswith("estimate vs actual (offer 202")
    assert not report.measured(root).get("corrections")


def test_up_warns_when_the_cost_guards_stop_the_instance_before_the_estimated_job_ends(vast):
    from tests.deploy.conftest import out

    vast.fake.add_offer(dph_base=0.9)
    vast.set(image_gb=1, budget_usd=0.05)  # 0.05 $ at ~0.92 $/h: 3.3 min of rental
    ds = vast.project.cwd / "dataset" / "Violence"
    ds.mkdir(parents=True)
    with open(ds / "big.mp4", "wb") as fh:  # 10 GB (sparse): 13 min through the 100 Mb/s default uplink
        fh.truncate(10 * 10**9)
    try:
        r = vast.run("up")
        assert r.returncode == 0, out(r)
        assert "the job model estimates" in r.stderr and "more than the 0.1 h the cost guards allow" in r.stderr
        assert "estimate: $" in r.stderr and "upload-bound" in r.stderr
    finally:
        assert vast.run("down", "--force").returncode == 0
