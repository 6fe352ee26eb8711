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

Everything the host says is untrusted (see deploy/fetch_names.py): only the names a run writes
are asked for (rsync --files-from with exactly those names, --no-links, no devices or special
files), each at most --max-size (checked against the host's listing, and enforced on the local
rsync by the kernel, RLIMIT_FSIZE), after a free-space check here. Staged and installed files
are reached through deploy/host/shipped/safe_tree.py (each folder a real folder, each file a regular file,
never through a symlink), so no name and no link the host made can put a byte outside
runs/<run>/. What was refused is printed by name.

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
from deploy.fetch_names import DEFAULT_MAX_SIZE, Listing, append_only, find_expression, parse_listing
from deploy.host import host_text
from deploy.host.layout import Layout
from deploy.host.remote import Remote, rpath
from deploy.host.shipped.safe_tree import Tree, Unsafe, scrub
from deploy.logs import run_state
from deploy.sync import human, rsync

ROUNDS = 3
STAGING = ".fetching"  # runs/.fetching/<run>/ (run names never start with a dot)
SPARE = 64 * 1024**2  # free space left over after a fetch: a full disk breaks everything else too


def remote_listing(remote: Remote, run_dir: str, checkpoints: bool, max_size: int) -> Listing:
    """The host's results: sizes, SHA-256s (of files up to max_size) and the files open for writing."""
    wanted = find_expression(checkpoints)
    # Open-for-write: every fd under /proc whose target is in the run folder, with the access
    # mode of its fdinfo flags (octal; last digit & 3: 1 O_WRONLY, 2 O_RDWR). A writer that
    # pauses half-way keeps a torn file stable across both hashes; this is what catches it.
    out = remote.run(f"""cd {rpath(run_dir)} || exit 0
find . -type f \\( {wanted} \\) -printf 'size %s %p\\n'
find . -type f \\( {wanted} \\) -size -{max_size + 1}c -exec sha256sum {{}} +
here=$(pwd -P)
find /proc/[0-9]*/fd -mindepth 1 -maxdepth 1 -type l -printf '%h/../fdinfo/%f %l\\n' 2>/dev/null |
while read -r info target; do
  case "$target" in "$here"/*) ;; *) continue;; esac
  case "$(sed -n 's/^flags:[[:space:]]*//p' "$info" 2>/dev/null)" in
    *[1256]) printf 'writing ./%s\\n' "${{target#"$here"/}}";;
  esac
done
""").stdout
    return parse_listing(out, checkpoints, max_size)


def _digest(tree: Tree, name: str, max_size: int) -> str | None:
    """SHA-256 of the regular file `name` under `tree` (never through a symlink); None if it is not one."""
    try:
        fd = tree.open_read(name)
    except (Unsafe, OSError):
        return None
    h = hashlib.sha256()
    with os.fdopen(fd, "rb") as fh:
        if os.fstat(fh.fileno()).st_size > max_size:
            return None
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_room(dest_root: Path, listing: Listing, here: Tree, previous: dict[str, str]) -> None:
    """Refuse before copying when the results would not fit on this machine's disk."""
    need = 0
    for name, size in listing.sizes.items():
        if previous.get(name) == listing.hashes[name]:
            try:
                if here.lstat(name).st_size == size:
                    continue  # already here, verified: rsync hard-links it (--link-dest), no new space
            except (Unsafe, OSError):
                pass
        need += size
    free = shutil.disk_usage(dest_root).free
    if need + SPARE > free:
        raise UsageError(f"the results need {human(need)} but {dest_root}/ has {human(free)} free on this machine "
                         f"(keeping {human(SPARE)} spare): free space here, or leave the biggest files on the host "
                         f"with a smaller --max-size")


def _say_refused(listing: Listing, max_size: int) -> None:
    if listing.refused:
        names = list(listing.refused.items())
        print(f"refused {len(names)} name(s) the host listed (nothing of them was written here):")
        for name, why in names[:20]:
            print(f"  {name!r}: {why}")
        if len(names) > 20:
            print(f"  ... and {len(names) - 20} more")
    for name, size in sorted(listing.too_big.items()):
        print(f"not fetched: {name} is {human(size)}, over --max-size {human(max_size)}: fetch again with a larger "
              f"--max-size to bring it here")


def _install(here: Tree, staged: Tree, name: str, blocked: dict[str, str]) -> bool:
    """Move a verified staged file into runs/<run>/ (fsync'd, atomic); False when the local path is not ours."""
    try:
        here.move_here(staged, name)
        return True
    except (Unsafe, OSError) as exc:
        blocked[name] = str(exc)
        return False


def fetch(remote: Remote, layout: Layout, state, run: str | None = None, dest_root: Path = Path("runs"),
          max_size: int = DEFAULT_MAX_SIZE, checkpoints: bool = False) -> dict:
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
    if staging.is_symlink():
        staging.unlink()  # our own scratch folder: never a link to somewhere else
    dest.mkdir(parents=True, exist_ok=True)
    staging.mkdir(parents=True, exist_ok=True)
    scrub(staging)  # an interrupted fetch's partial files stay (rsync resumes them); anything else goes
    names_file = staging.parent / f".{run}.names"
    previous = ((state.runs.get(run) or {}).get("fetches") or [{}])[-1].get("files") or {}
    sent = 0
    verified: dict[str, str] = {}
    pending: list[str] = []
    blocked: dict[str, str] = {}
    with Tree(dest) as here, Tree(staging) as staged:
        for attempt in range(1, ROUNDS + 1):
            before = remote_listing(remote, run_dir, checkpoints, max_size)
            if attempt == 1:
                _say_refused(before, max_size)
                if not before.hashes and not before.too_big:
                    raise UsageError(f"run {run} has no results yet on {remote.host.host}: wait for the first "
                                     f"epoch (`make logs`)")
                check_room(dest_root, before, here, previous)
                first = before
            names_file.write_bytes(b"".join(n.encode() + b"\0" for n in sorted(before.hashes)))
            # after a mismatch, compare by content (-c): a damaged local copy can have the right size and mtime
            again = ["--checksum"] if attempt > 1 else []
            t = rsync(remote, [*again, "--no-links", "--no-devices", "--no-specials", "--no-owner", "--no-group",
                               "--no-perms", f"--max-size={max_size}", f"--link-dest={dest.resolve()}",
                               f"--files-from={names_file}", "--from0",
                               f"{remote.target}:{run_dir}/", f"{staging}/"], "fetch", max_file_bytes=max_size)
            sent += t.bytes_received
            after = remote_listing(remote, run_dir, checkpoints, max_size)
            pending = []
            for f, digest in sorted(after.hashes.items()):
                if verified.get(f) == digest or f in blocked:
                    continue  # installed in an earlier round and unchanged since
                if (before.hashes.get(f) == digest and f not in after.writing
                        and _digest(staged, f, max_size) == digest and _install(here, staged, f, blocked)):
                    verified[f] = digest
                elif f not in blocked:
                    verified.pop(f, None)
                    pending.append(f)
            if not pending:
                break
            if attempt < ROUNDS:
                print(f"{len(pending)} file(s) changed while copying ({', '.join(pending[:3])}): "
                      f"copying again ({attempt + 1}/{ROUNDS})")
        for f in pending:  # a growing log is worth having as it is; anything else stays the last verified copy
            if append_only(f) and _digest(staged, f, max_size) is not None:
                _install(here, staged, f, blocked)
    shutil.rmtree(staging, ignore_errors=True)
    names_file.unlink(missing_ok=True)
    try:
        staging.parent.rmdir()  # runs/.fetching/, once no other run's fetch is half-way
    except OSError:
        pass
    for f, why in blocked.items():
        print(f"not installed: {dest}/{f}: {host_text.one_line(why)} (remove what is in the way and fetch again)")
    # the run may have been resumed (or may have ended) while we copied: final only if it ended before AND after
    status_after, code_after = run_state(remote, run_dir)
    ended = status in ("finished", "failed", "stopped") and (status_after, code_after) == (status, code)
    if status_after != status:
        print(f"note: run {run} went from {status} to {status_after} while fetching: fetch again when it ends")
    left_behind = pending or first.too_big or blocked
    state.record_fetch(run, verified, final=ended and not left_behind)
    if pending and ended:
        raise UsageError(f"SHA-256 mismatch for {', '.join(pending)} after {ROUNDS} attempts: "
                         f"run `fetch` again (the local copy may be damaged)")
    size = sum((dest / f).stat().st_size for f in verified)
    print(f"fetched run {run} ({status_after}) into {dest}/: {len(verified)} file(s), {human(size)}, "
          f"{human(sent)} transferred, SHA-256 verified")
    if pending:
        kept = [f for f in pending if not append_only(f)]
        print(f"still being written by the running job: {', '.join(pending)}"
              + (f" (kept the last verified local copy of {', '.join(kept)})" if kept else "")
              + "; fetch again later")
    for f in ("best_model.keras", "metrics.json", "training_history.csv"):
        if f in verified:
            print(f"  {f:<22} {verified[f][:16]}")
    return {"run": run, "state": status_after, "exit_code": code_after, "files": verified, "unverified": pending,
            "refused": dict(first.refused), "too_big": dict(first.too_big), "dest": str(dest)}
