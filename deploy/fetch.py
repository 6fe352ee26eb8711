"""`fetch`: the run's results into runs/<run>/ here, each file's SHA-256 checked against the host's.

A run still going rewrites best_model.keras (Keras writes it in place) and appends to
its logs while we copy, so a copy can catch a file half-written. Nothing half-written
is ever installed:

1. the host hashes the results, and lists the files some process holds open for writing;
2. rsync copies into a staging folder (runs/.fetching/<run>/; unchanged files are
   hard-linked from runs/<run>/ with --link-dest, so nothing is sent or copied twice);
3. the host hashes again;
4. a file is installed into runs/<run>/ (fsync + os.replace) only when both hashes and
   the staged copy agree and nobody had it open for writing; the others are copied
   again (up to ROUNDS) and otherwise left as they were here (the last verified copy).
   Append-only logs (train.log, training_history.csv, tensorboard events) are installed
   as copied either way: a shorter log is not a damaged one.

The run's state is read before AND after copying: only a run that had ended both times
(same exit status) counts as the final fetch, which is what `down` of a renting provider
checks in `.deploy/`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from deploy.errors import UsageError
from deploy.layout import Layout
from deploy.logs import run_state
from deploy.remote import Remote, rpath
from deploy.sync import human, rsync

RESULTS = ["best_model.keras", "model_info.json", "training_history.csv", "metrics.json", "train.log"]
RESULT_DIRS = ["plots", "tensorboard"]
APPEND_ONLY = ("train.log", "training_history.csv", "tensorboard/")  # growing logs: a prefix is not torn
ROUNDS = 3
STAGING = ".fetching"  # runs/.fetching/<run>/ (run names never start with a dot)


def rsync_filter() -> list[str]:
    return ([f"--include=/{f}" for f in RESULTS] + [f"--include=/{d}/***" for d in RESULT_DIRS]
            + ["--exclude=*"])


def remote_hashes(remote: Remote, run_dir: str) -> tuple[dict[str, str], set[str]]:
    """(relative path -> SHA-256 on the host, the files some process has open for writing there)."""
    wanted = " -o ".join([f"-path ./{f}" for f in RESULTS] + [f"-path './{d}/*'" for d in RESULT_DIRS])
    # Open-for-write: every fd under /proc whose target is in the run folder, with the access
    # mode of its fdinfo flags (octal; last digit & 3: 1 O_WRONLY, 2 O_RDWR). A writer that
    # pauses half-way keeps a torn file stable across both hashes; this is what catches it.
    out = remote.run(f"""cd {rpath(run_dir)} || exit 0
find . -type f \\( {wanted} \\) -exec sha256sum {{}} +
here=$(pwd -P)
find /proc/[0-9]*/fd -mindepth 1 -maxdepth 1 -type l -printf '%h/../fdinfo/%f %l\\n' 2>/dev/null |
while read -r info target; do
  case "$target" in "$here"/*) ;; *) continue;; esac
  case "$(sed -n 's/^flags:[[:space:]]*//p' "$info" 2>/dev/null)" in
    *[1256]) printf 'writing ./%s\\n' "${{target#"$here"/}}";;
  esac
done
""").stdout
    hashes, writing = {}, set()
    for line in out.splitlines():
        if line.startswith("writing ./"):
            writing.add(line[len("writing ./"):])
            continue
        digest, _, name = line.partition("  ")
        if len(digest) == 64 and name.startswith("./"):
            hashes[name[2:]] = digest
    return hashes, writing


def sha256_file(path: Path) -> str | None:
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _install(staged: Path, final: Path) -> None:
    """Move a verified staged file into place: fsync'd, atomic (a crash leaves the old or the new file)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(staged, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(staged, final)
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _append_only(name: str) -> bool:
    return any(name == a or (a.endswith("/") and name.startswith(a)) for a in APPEND_ONLY)


def fetch(remote: Remote, layout: Layout, state, run: str | None = None, dest_root: Path = Path("runs")) -> dict:
    run = run or state.current_run
    if not run:
        raise UsageError("no run to fetch: `python -m deploy start` first (or pass --run NAME)")
    run_dir = layout.run_dir(run)  # refuses names that would climb out of runs/
    dest = dest_root / run
    state.check_run_target(run, dest)
    status, code = run_state(remote, run_dir)
    if status == "missing":
        raise UsageError(f"run {run} does not exist on {remote.host.host} (workspace {layout.workspace})")
    staging = dest_root / STAGING / run
    dest.mkdir(parents=True, exist_ok=True)
    staging.mkdir(parents=True, exist_ok=True)
    sent = 0
    verified: dict[str, str] = {}
    pending: list[str] = []
    for attempt in range(1, ROUNDS + 1):
        before, _ = remote_hashes(remote, run_dir)
        if not before:
            raise UsageError(f"run {run} has no results yet on {remote.host.host}: wait for the first epoch "
                             f"(`make logs`)")
        # after a mismatch, compare by content (-c): a damaged local copy can have the right size and mtime
        again = ["--checksum"] if attempt > 1 else []
        t = rsync(remote, [*again, f"--link-dest={dest.resolve()}", *rsync_filter(),
                           f"{remote.target}:{run_dir}/", f"{staging}/"], "fetch")
        sent += t.bytes_received
        after, writing = remote_hashes(remote, run_dir)
        pending = []
        for f, digest in sorted(after.items()):
            if verified.get(f) == digest:
                continue  # installed in an earlier round and unchanged since
            staged = staging / f
            if before.get(f) == digest and f not in writing and sha256_file(staged) == digest:
                _install(staged, dest / f)
                verified[f] = digest
            else:
                verified.pop(f, None)
                pending.append(f)
        if not pending:
            break
        if attempt < ROUNDS:
            print(f"{len(pending)} file(s) changed while copying ({', '.join(pending[:3])}): "
                  f"copying again ({attempt + 1}/{ROUNDS})")
    for f in pending:  # a growing log is worth having as it is; anything else stays the last verified copy
        if _append_only(f) and (staging / f).is_file():
            _install(staging / f, dest / f)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.parent.rmdir()  # runs/.fetching/, once no other run's fetch is half-way
    except OSError:
        pass
    # the run may have been resumed (or may have ended) while we copied: final only if it ended before AND after
    status_after, code_after = run_state(remote, run_dir)
    ended = status in ("finished", "failed", "stopped") and (status_after, code_after) == (status, code)
    if status_after != status:
        print(f"note: run {run} went from {status} to {status_after} while fetching: fetch again when it ends")
    state.record_fetch(run, verified, final=ended and not pending)
    if pending and ended:
        raise UsageError(f"SHA-256 mismatch for {', '.join(pending)} after {ROUNDS} attempts: "
                         f"run `fetch` again (the local copy may be damaged)")
    size = sum((dest / f).stat().st_size for f in verified)
    print(f"fetched run {run} ({status_after}) into {dest}/: {len(verified)} file(s), {human(size)}, "
          f"{human(sent)} transferred, SHA-256 verified")
    if pending:
        kept = [f for f in pending if not _append_only(f)]
        print(f"still being written by the running job: {', '.join(pending)}"
              + (f" (kept the last verified local copy of {', '.join(kept)})" if kept else "")
              + "; fetch again later")
    for f in ("best_model.keras", "metrics.json", "training_history.csv"):
        if f in verified:
            print(f"  {f:<22} {verified[f][:16]}")
    return {"run": run, "state": status_after, "exit_code": code_after, "files": verified, "unverified": pending,
            "dest": str(dest)}
