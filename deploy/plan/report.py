"""Estimate vs actual: what the job model said, what the run took, and what the next estimate learns.

`.deploy/plan.json` (atomic writes, nothing secret):

    estimate      the whole-job estimate for the offer that was rented (`up`), with its inputs
    sync          {started_at, ended_at, bytes}: the last sync's wall-clock span (epoch seconds)
    up            {started_at, ended_at}: the last `up` that rented (create -> SSH answers ~ the pull)
    measured      figures the next estimate uses: uplink_mbps (+ uplink_how), videos,
                  corrections {phase: actual / estimated} from the last finished run

A run's own timestamps come from the `[deploy] <UTC time> extract|train|run ended` lines that
deploy/start.py's run script writes into train.log, and its epochs from training_history.csv.
"""

from __future__ import annotations

import csv
import io
import os
import time
from calendar import timegm
from pathlib import Path

from deploy.local import jsonfile
from deploy.plan.job_model import PHASES, fmt_minutes

FILE = "plan.json"
PROBE_BYTES = 4 * 1024 * 1024   # the uplink probe after `up`: 4 MiB, a second or less on 100 Mb/s
MIN_SYNC_BYTES_FOR_RATE = 20_000_000  # a sync smaller than this says more about latency than bandwidth


# -- the store ------------------------------------------------------------------------
def load(root: str | os.PathLike = ".deploy") -> dict:
    return jsonfile.read(Path(root) / FILE)


def save(data: dict, root: str | os.PathLike = ".deploy") -> None:
    jsonfile.write_atomic(Path(root) / FILE, data)


def update(root, **sections) -> dict:
    """Read-merge-write under an flock, so `status` in a second terminal cannot drop a `sync`'s figures."""
    with jsonfile.exclusive(Path(root) / ".plan.lock"):
        data = load(root)
        for k, v in sections.items():
            if isinstance(v, dict) and isinstance(data.get(k), dict):
                data[k] = {**data[k], **v}
            else:
                data[k] = v
        save(data, root)
    return data


def measured(root=".deploy") -> dict:
    return load(root).get("measured") or {}


def remember_estimate(root, est: dict, inputs: str, corrections_used: dict | None = None) -> None:
    update(root, estimate={**est, "inputs": inputs, "at": time.time(), "corrections_used": corrections_used or {}})


# -- measuring --------------------------------------------------------------------------
def record_sync(root, started: float, ended: float, bytes_sent: int, source: str | None) -> None:
    m = {}
    secs = max(ended - started, 1e-3)
    if bytes_sent >= MIN_SYNC_BYTES_FOR_RATE and source in ("local", "cache"):
        m = {"uplink_mbps": round(bytes_sent * 8 / 1e6 / secs, 1), "uplink_how": f"by sync ({bytes_sent:,} bytes)"}
    update(root, sync={"started_at": started, "ended_at": ended, "bytes": bytes_sent, "source": source},
           **({"measured": m} if m else {}))


def probe_uplink(remote, root=".deploy") -> float | None:
    """After `up`: send PROBE_BYTES to the host's /dev/null and time it (min of the uplink and inet_down).

    Kept only when nothing better (a large sync) was measured yet.
    """
    m = measured(root)
    if m.get("uplink_mbps") and "sync" in str(m.get("uplink_how")):
        return float(m["uplink_mbps"])
    t0 = time.perf_counter()
    try:
        remote.run("cat > /dev/null", stdin=os.urandom(PROBE_BYTES // 2).hex(), timeout=60)
    except Exception:  # a failed probe is no reason to fail `up`
        return None
    mbps = round(PROBE_BYTES * 8 / 1e6 / max(time.perf_counter() - t0, 1e-3), 1)
    update(root, measured={"uplink_mbps": mbps, "uplink_how": f"after `up` ({PROBE_BYTES // 1024 // 1024} MiB probe)"})
    return mbps


# -- the run's own timestamps ---------------------------------------------------------
def _ts(s: str) -> float | None:
    """'2026-12-01T10:00:00.123456789Z' (or without the fraction) as a UNIX time.

    The run script stamps nanoseconds because a short phase must not round to zero; a `date`
    without %N leaves the fraction unexpanded ('.%N', '.N'), which counts as whole seconds.
    """
    if not s.endswith("Z"):
        return None
    whole, _, frac = s[:-1].partition(".")
    try:
        t = float(timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")))
    except ValueError:
        return None
    return t + float("0." + frac) if frac.isdigit() else t


def run_times(train_log: str, history_csv: str = "") -> dict:
    """{started, extract_start, train_start, ended, exit_code, epochs} from train.log / history."""
    out: dict = {}
    for line in train_log.splitlines():
        if line.startswith("usable videos: "):  # trainer extract's summary (trainer/extract_summary.py print_summary)
            n = line.split()[2].rstrip(",")
            if n.isdigit():
                out["videos"] = int(n)
            continue
        parts = line.split()
        if len(parts) < 3 or parts[0] != "[deploy]" or (t := _ts(parts[1])) is None:
            continue
        if parts[2:4] == ["run", "ended"]:      # "... run ended with exit code N" (the last one wins)
            out["ended"], out["exit_code"] = t, parts[-1]
        elif parts[2] == "run":                 # "... run NAME on HOST": a start (or a resume)
            out.setdefault("started", t)
        elif parts[2] in ("extract", "train"):
            out[f"{parts[2]}_start"] = t
    if out.get("ended") and out.get("train_start") and out["ended"] < out["train_start"]:
        out.pop("ended")  # a resumed run that is going again
        out.pop("exit_code", None)
    rows = [r for r in csv.DictReader(io.StringIO(history_csv)) if r.get("epoch") not in (None, "")]
    out["epochs"] = len(rows)
    return out


def actual_hours(plan: dict, times: dict, now: float | None = None) -> dict:
    """Hours per phase that really passed; None where the run has not told us (yet)."""
    now = time.time() if now is None else now
    act: dict = {p: None for p in PHASES}
    sync = plan.get("sync") or {}
    if sync.get("started_at") is not None and sync.get("ended_at") is not None:
        act["upload"] = (sync["ended_at"] - sync["started_at"]) / 3600
    up = plan.get("up") or {}
    if up.get("started_at") is not None and up.get("ended_at") is not None:
        act["pull"] = (up["ended_at"] - up["started_at"]) / 3600
    if times.get("train_start"):
        start = times.get("extract_start")
        act["extract"] = (times["train_start"] - start) / 3600 if start else 0.0
        act["train"] = ((times.get("ended") or now) - times["train_start"]) / 3600
    return act


def learn(root, est: dict, act: dict, times: dict) -> dict:
    """After an ended run: keep actual/estimated per phase, so the next estimate is corrected.

    Relative to the raw model: the estimate recorded the corrections it was made with, so
    learning twice from the same run (status, then fetch) gives the same figure, never a product.
    """
    used = est.get("corrections_used") or {}
    corrections = dict(measured(root).get("corrections") or {})
    for p in ("extract", "train"):
        e, a = (est.get("phases") or {}).get(p), act.get(p)
        if e and a and e > 0 and a > 0 and times.get("ended"):
            corrections[p] = round(float(used.get(p) or 1.0) * a / e, 3)
    update(root, measured={"corrections": corrections, **({"videos": times["videos"]} if times.get("videos") else {})})
    return corrections


def report_lines(plan: dict, times: dict, now: float | None = None) -> list[str]:
    """'phase  estimate  actual' lines (what status and fetch print)."""
    est = plan.get("estimate") or {}
    act = actual_hours(plan, times, now)
    running = times.get("train_start") and not times.get("ended")
    head = "estimate vs actual" + (f" (offer {est.get('id')}, {est.get('gpus')}, "
                                   f"{'$%.2f' % est['job_cost_usd']} estimated)" if est else " (no estimate recorded)")
    lines = [head, f"  {'phase':<8} {'estimate':>10} {'actual':>10}"]
    for p in PHASES:
        e = (est.get("phases") or {}).get(p)
        a = act.get(p)
        a_s = "-" if a is None else fmt_minutes(a)
        note = f"  ({times.get('epochs', 0)} epochs{', running' if running else ''})" \
            if p == "train" and times.get("train_start") else ""
        lines.append(f"  {p:<8} {'-' if e is None else fmt_minutes(e):>10} {a_s:>10}{note}")
    known = [a for a in act.values() if a is not None]
    total_e = est.get("job_hours")
    lines.append(f"  {'total':<8} {'-' if total_e is None else fmt_minutes(total_e):>10} "
                 f"{fmt_minutes(sum(known)) if known else '-':>10}")
    return lines


def estimate_vs_actual(root, train_log: str, history_csv: str = "", learn_from_it: bool = True) -> list[str]:
    """The lines status/fetch print; after an ended run, keep what it measured for the next estimate."""
    plan = load(root)
    times = run_times(train_log, history_csv)
    if not plan.get("estimate") and not times.get("train_start"):
        return []
    if learn_from_it and times.get("ended") and times.get("exit_code") == "0" and plan.get("estimate"):
        # only a run that finished teaches: a failed or stopped one says nothing about the phases' speed
        learn(root, plan["estimate"], actual_hours(plan, times), times)
    return report_lines(plan, times)


def print_estimate_vs_actual(root, train_log: str, history_csv: str = "", file=None, learn_from_it: bool = True) -> None:
    for line in estimate_vs_actual(root, train_log, history_csv, learn_from_it):
        print(line, file=file)


def remote_run_files(remote, run_dir: str) -> tuple[str, str]:
    """train.log's [deploy] lines and training_history.csv of a run on the host (one round trip)."""
    from deploy.host.remote import rpath

    wanted = "-e '^\\[deploy\\] ' -e '^usable videos: '"
    out = remote.run(f"cd {rpath(run_dir)} 2>/dev/null && {{ grep {wanted} train.log 2>/dev/null; "
                     f"echo @@history; cat training_history.csv 2>/dev/null; }}").stdout
    log, _, hist = out.partition("@@history\n")
    return log, hist


def status_lines(remote, layout, state) -> list[str]:
    """For `status`: the rented offer's estimate, and once a run exists, estimate vs actual."""
    run = state.current_run
    if not run:
        plan = load(state.root)
        return report_lines(plan, {}) if plan.get("estimate") else []
    log, hist = remote_run_files(remote, layout.run_dir(run))
    return estimate_vs_actual(state.root, log, hist)


def fetch_lines(dest: Path, state) -> list[str]:
    """For `fetch`: estimate vs actual from the fetched train.log and training_history.csv."""
    def read(p: Path) -> str:
        try:
            return p.read_text(errors="replace")
        except OSError:
            return ""
    return estimate_vs_actual(state.root, read(dest / "train.log"), read(dest / "training_history.csv"))
