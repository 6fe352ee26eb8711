"""`fetch`: the run's results into runs/<run>/ here, each file's SHA-256 checked against the host's.

rsync brings the files (resumable, only what changed); then both sides hash them. A
run still going rewrites best_model.keras and appends to logs while we copy, so a
mismatch is retried: the next round re-sends only what changed. What still differs
after the last round of a RUNNING run is reported as "being written" (fetch again
later); for an ended run any mismatch is an error. `.deploy/` records the verified
hashes and whether the run had ended, which is what `down` of a renting provider checks.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from deploy.errors import UsageError
from deploy.layout import Layout
from deploy.logs import run_state
from deploy.remote import Remote, rpath
from deploy.sync import human, rsync

RESULTS = ["best_model.keras", "model_info.json", "training_history.csv", "metrics.json", "train.log"]
RESULT_DIRS = ["plots", "tensorboard"]
ROUNDS = 3


def rsync_filter() -> list[str]:
    return ([f"--include=/{f}" for f in RESULTS] + [f"--include=/{d}/***" for d in RESULT_DIRS]
            + ["--exclude=*"])


def remote_hashes(remote: Remote, run_dir: str) -> dict[str, str]:
    wanted = " -o ".join([f"-path ./{f}" for f in RESULTS] + [f"-path './{d}/*'" for d in RESULT_DIRS])
    out = remote.run(f"cd {rpath(run_dir)} && find . -type f \\( {wanted} \\) -exec sha256sum {{}} +").stdout
    hashes = {}
    for line in out.splitlines():
        digest, _, name = line.partition("  ")
        if len(digest) == 64 and name.startswith("./"):
            hashes[name[2:]] = digest
    return hashes


def sha256_file(path: Path) -> str | None:
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(remote: Remote, layout: Layout, state, run: str | None = None, dest_root: Path = Path("runs")) -> dict:
    run = run or state.current_run
    if not run:
        raise UsageError("no run to fetch: `python -m deploy start` first (or pass --run NAME)")
    run_dir = layout.run_dir(run)
    status, code = run_state(remote, run_dir)
    if status == "missing":
        raise UsageError(f"run {run} does not exist on {remote.host.host} (workspace {layout.workspace})")
    ended = status in ("finished", "failed", "stopped")
    dest = dest_root / run
    dest.mkdir(parents=True, exist_ok=True)
    sent = 0
    mismatched: list[str] = []
    for attempt in range(1, ROUNDS + 1):
        theirs = remote_hashes(remote, run_dir)
        if not theirs:
            raise UsageError(f"run {run} has no results yet on {remote.host.host}: wait for the first epoch "
                             f"(`make logs`)")
        # after a mismatch, compare by content (-c): a damaged local copy can have the right size and mtime
        again = ["--checksum"] if attempt > 1 else []
        t = rsync(remote, [*again, *rsync_filter(), f"{remote.target}:{run_dir}/", f"{dest}/"], "fetch")
        sent += t.bytes_received
        mismatched = [f for f, digest in theirs.items() if sha256_file(dest / f) != digest]
        if not mismatched:
            break
        if attempt < ROUNDS:
            print(f"{len(mismatched)} file(s) changed while copying ({', '.join(sorted(mismatched)[:3])}): "
                  f"copying again ({attempt + 1}/{ROUNDS})")
    verified = {f: d for f, d in theirs.items() if f not in mismatched}
    if mismatched and ended:
        raise UsageError(f"SHA-256 mismatch for {', '.join(sorted(mismatched))} after {ROUNDS} attempts: "
                         f"run `fetch` again (the local copy may be damaged)")
    state.record_fetch(run, verified, final=ended and not mismatched)
    size = sum((dest / f).stat().st_size for f in verified)
    print(f"fetched run {run} ({status}) into {dest}/: {len(verified)} file(s), {human(size)}, "
          f"{human(sent)} transferred, SHA-256 verified")
    if mismatched:
        print(f"still being written by the running job (copied as they were, not verified): "
              f"{', '.join(sorted(mismatched))}; fetch again later")
    for f in ("best_model.keras", "metrics.json", "training_history.csv"):
        if f in verified:
            print(f"  {f:<22} {verified[f][:16]}")
    return {"run": run, "state": status, "exit_code": code, "files": verified, "unverified": mismatched,
            "dest": str(dest)}
