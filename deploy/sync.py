"""`sync`: code, dataset (or feature cache) to the host with rsync, over the pinned SSH settings.

rsync does the real work: incremental (a second sync of unchanged files sends only
file lists), resumable (`--partial-dir` keeps a killed transfer's data and the next run
continues from it), protected arguments (`-s`: remote paths with spaces, quotes or
`$(...)` reach the remote rsync untouched by any shell). We add: the same key and the
same pinned known_hosts as fabric, a progress display, the bytes actually sent, and
one-line errors for the usual failures.

A dataset given as an HTTP(S) archive URL or a Kaggle slug is downloaded by the host
itself (deploy/host/shipped/download_dataset.py), credentials going through the SSH channel's
stdin only.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from deploy.config import AUTO_VENV, OVERLAY
from deploy.dataset import source as dataset_source
from deploy.errors import UsageError
from deploy.host.layout import Layout, project_root
from deploy.host.overlay import ensure_overlay
from deploy.host.remote import Remote, explain, q, rpath
from deploy.host.shipped import download_dataset, safe_tree
from deploy.http_guard import refuse_plain_http
from deploy.start import running_runs_script

# The project's code as the host needs it: everything else (.venv, .git, datasets, runs) stays home.
CODE_FILTER = ["--include=/trainer/***", "--include=/configs/***", "--include=/pyproject.toml",
               "--include=/README.md", "--exclude=__pycache__/", "--exclude=*.pyc", "--exclude=*"]
PARTIAL_DIR = ".rsync-partial"
# A dataset sync mirrors the local folder (--delete), so an unmounted drive or a wrong
# dataset.path would empty the host's copy: more deletions than this share of the host's
# files needs --delete-remote.
MAX_DELETE_SHARE = 0.25


@dataclass
class Transfer:
    bytes_sent: int = 0
    bytes_received: int = 0
    total_size: int = 0  # size of all files considered (what a full copy would send)
    listing: list[str] = field(default_factory=list)

    def __iadd__(self, other: "Transfer") -> "Transfer":
        self.bytes_sent += other.bytes_sent
        self.bytes_received += other.bytes_received
        self.total_size += other.total_size
        return self


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def require_local_rsync() -> str:
    path = shutil.which("rsync")
    if not path:
        raise UsageError("rsync is not installed on this machine: install it "
                         "(apt-get install rsync / brew install rsync)")
    return path


def _stat(text: str, label: str) -> int:
    m = re.search(rf"^{label}:\s*([\d,.']+)", text, re.M)
    return int(re.sub(r"\D", "", m.group(1))) if m else 0


def rsync(remote: Remote, args: list[str], what: str, bwlimit: int | None = None, capture: bool = False,
          max_file_bytes: int | None = None) -> Transfer:
    """Run rsync with our SSH settings; progress on a terminal, `Transfer` from --stats.

    `capture`: no progress display; the output lines (e.g. --itemize-changes) come back in .listing.
    `max_file_bytes` (a copy from the host to here): the kernel refuses the local rsync any file
    larger than this (RLIMIT_FSIZE), whatever sizes the host's rsync announced; a file vanishing
    on the host, or refused so, is a partial transfer (exit 23) the caller's checks deal with.
    """
    cmd = [require_local_rsync(), "-a", "-s", "--stats", f"--partial-dir={PARTIAL_DIR}",
           "-e", shlex.join(remote.ssh_argv())]
    show = sys.stdout.isatty() and not capture
    if show:
        cmd.append("--info=progress2")
    if bwlimit:
        cmd.append(f"--bwlimit={bwlimit}")
    proc = subprocess.Popen(cmd + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_file_size_cap(max_file_bytes) if max_file_bytes else None)
    err_chunks: list[bytes] = []
    err_reader = threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()), daemon=True)
    err_reader.start()
    out = bytearray()
    try:
        while chunk := proc.stdout.read1(4096):
            out += chunk
            if show:  # progress2 redraws one line with \r
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
        code = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        raise UsageError(f"{what} interrupted: run the same command again to resume where it stopped") from None
    err_reader.join()
    stderr = b"".join(err_chunks).decode(errors="replace")
    stats = out.decode(errors="replace")
    harmless = (0, 24, 23) if max_file_bytes else (0, 24)  # 24: files vanished while copying (a rotated log)
    if code not in harmless:
        raise UsageError(f"{what} failed: {rsync_error(stderr, code, remote, into_here=bool(max_file_bytes))}")
    return Transfer(_stat(stats, "Total bytes sent"), _stat(stats, "Total bytes received"),
                    _stat(stats, "Total file size"), listing=stats.splitlines() if capture else [])


def _file_size_cap(limit: int):
    def cap() -> None:  # in the child, before exec: a write past `limit` fails with EFBIG (no SIGXFSZ kill)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return cap


def rsync_error(stderr: str, code: int, remote: Remote, into_here: bool = False) -> str:
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
        return (f"the host key of {remote.host.host} does not match the one pinned in {remote.known_hosts}: "
                f"forget it with `ssh-keygen -R` on that file if the host was really reinstalled")
    if "Host key verification failed" in stderr:  # no pin at all for this address: nothing "changed"
        return (f"the host key of {remote.host.host}:{remote.host.port} is not known: no key is pinned for it in "
                f"{remote.known_hosts} (the file was removed or emptied?): run `python -m deploy up` to pin it "
                f"again on first contact")
    if "rsync: command not found" in stderr or "rsync: not found" in stderr or code == 127:
        return f"rsync is not installed on {remote.host.host}: install it there (apt-get install rsync)"
    if "No space left on device" in stderr:
        if into_here:
            return "this machine's disk is full: free space here and run the same command again"
        return f"the disk of {remote.host.host} is full: free space in the workspace or use a larger disk"
    if code == 20:
        return "interrupted: run the same command again to resume where it stopped"
    if code in (12, 255) and ("Connection refused" in stderr or "timed out" in stderr or "closed" in stderr):
        return f"lost the SSH connection ({explain(stderr)}): run the same command again to resume"
    return explain(stderr, code)


def remote_url(remote: Remote, path: str) -> str:
    return f"{remote.target}:{path.rstrip('/')}/"


# -- what gets synced -------------------------------------------------------------
def sync_code(remote: Remote, layout: Layout, config: dict) -> Transfer:
    root = project_root()
    # --delete: a module deleted here must not linger there as stale, still-importable code
    t = rsync(remote, ["--delete", *CODE_FILTER, f"{root}/", remote_url(remote, layout.app)], "code sync")
    train_cfg = Path(config["train"]["config"])
    if not train_cfg.is_file():
        raise UsageError(f"train.config {train_cfg} not found: point train.config at a YAML file "
                         f"(e.g. configs/train.yaml)")
    if layout.train_config(config).startswith("run-configs/"):  # a config outside the project
        t += rsync(remote, [str(train_cfg), remote_url(remote, layout.app + "/run-configs")], "train config sync")
    return t


def local_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def prepare(remote: Remote, layout: Layout, folders: list[tuple[Path, str]]) -> dict[str, int]:
    """One round trip before any transfer: no run is alive, rsync is there, the folders exist, the data fits.

    Checking room first matters: rsync would otherwise fail half-way through, hours later.
    """
    for local, _ in folders:
        if not local.is_dir():
            raise UsageError(f"folder {local} does not exist: fix dataset.path / dataset.cache in the deploy config")
    targets = [layout.app, layout.app + "/run-configs"] + [t for _, t in folders]
    present = " ".join(rpath(t) for _, t in folders) or "/dev/null"
    # how many files the host already has in each folder (what a mirroring sync could delete)
    counts = "".join(f'echo "files{i}=$(find {rpath(t)} -type f ! -path \'*/{PARTIAL_DIR}/*\' 2>/dev/null | wc -l)"\n'
                     for i, (_, t) in enumerate(folders))
    r = remote.run(f"""
echo "running=$({{ {running_runs_script(layout)} }} | tr '\\n' ' ')"
command -v rsync >/dev/null 2>&1 || {{ echo rsync=missing; exit 0; }}
mkdir -p {" ".join(rpath(t) for t in targets)} || exit 3
echo "free_kb=$(df -Pk {rpath(layout.workspace)} | awk 'NR==2{{print $4}}')"
echo "present_kb=$(du -sk {present} 2>/dev/null | awk '{{s+=$1}} END {{print s+0}}')"
{counts}""")
    facts = dict(line.partition("=")[::2] for line in r.stdout.splitlines() if "=" in line)
    refuse_under_a_live_run(remote, facts.get("running", "").split())
    if facts.get("rsync") == "missing":
        raise UsageError(f"rsync is not installed on {remote.host.host}: install it there (apt-get install rsync), "
                         f"or use the project's image")
    if not r.ok:
        raise UsageError(f"cannot create the workspace folders on {remote.host.host}: {explain(r.stderr, r.exited)}")
    free_kb, present_kb = _count(facts.get("free_kb")), _count(facts.get("present_kb"))
    need_kb = sum(local_size(local) for local, _ in folders) // 1024
    if free_kb and need_kb > free_kb + present_kb:
        raise UsageError(f"the data needs {human(need_kb * 1024)} but {remote.host.host} has "
                         f"{human(free_kb * 1024)} free in {layout.workspace}: free space there or use a larger disk")
    return {t: _count(facts.get(f"files{i}")) for i, (_, t) in enumerate(folders)}


def _count(text: str | None) -> int:
    """A number the host printed (df, du, wc); 0 (unknown: that check is skipped) when it is not one."""
    text = (text or "").strip()
    return int(text) if text.isdigit() else 0


def refuse_under_a_live_run(remote: Remote, running: list[str]) -> None:
    """The code sync mirrors with --delete and a changed venv is rebuilt (rm -rf): neither may happen
    under a run that is alive (deploy/host/shipped/runstate.py's rule, as start, logs and fetch use it)."""
    if running:
        raise UsageError(f"run {running[0]} is running on {remote.host.host}: sync would replace its code (and "
                         f"its venv) under it; stop it first with `python -m deploy stop` (it saves a checkpoint; "
                         f"`python -m deploy start --resume` continues it), or wait for it to end (`make logs`)")


def local_files(path: Path) -> int:
    return sum(1 for f in path.rglob("*") if f.is_file() and PARTIAL_DIR not in f.parts)


def check_deletions(remote: Remote, local: Path, target: str, what: str, remote_files: int) -> None:
    """Refuse a mirror that would empty (or mostly empty) the host's copy; --delete-remote allows it."""
    if remote_files == 0:
        return
    flag = "pass --delete-remote if that is really what you want"
    if local_files(local) == 0:
        raise UsageError(f"the local {what} folder {local} is empty (an unmounted drive?): syncing it would delete "
                         f"all {remote_files} file(s) of the host's copy; {flag}")
    # what --delete would remove, asked of rsync itself without changing anything (-n)
    dry = rsync(remote, ["-n", "--delete", "--itemize-changes", f"{local}/",
                         remote_url(remote, target)], f"{what} check", capture=True)
    doomed = [ln for ln in dry.listing if ln.startswith("*deleting ") and not ln.endswith("/")]
    if len(doomed) > MAX_DELETE_SHARE * remote_files:
        raise UsageError(f"syncing {local} would delete {len(doomed)} of the {remote_files} file(s) in the host's "
                         f"{what} (more than {MAX_DELETE_SHARE:.0%}): is dataset.path the right folder? {flag}")


def sync_folder(remote: Remote, local: Path, target: str, what: str, bwlimit: int | None = None,
                mirror: bool = True) -> Transfer:
    print(f"{what}: {local} -> {remote.host.host}:{target}")
    # mirror (--delete): the host's dataset mirrors this one (a removed video is not trained on there).
    # Never for the feature cache: the host extracts features itself, which a mirror would delete.
    t = rsync(remote, [*(["--delete"] if mirror else []), f"{local}/", remote_url(remote, target)],
              f"{what} sync", bwlimit)
    print(f"{what}: sent {human(t.bytes_sent)} of {human(t.total_size)}")
    return t


def host_program(*modules) -> str:
    """One `python3 -c` program made of stdlib-only modules of deploy/host/shipped/ (the host has no
    deploy package): each but the last is registered under its own dotted name in sys.modules (its
    parent packages as empty modules), then the last runs as __main__ (so
    `from deploy.host.shipped.safe_tree import ...` works there as it does here)."""
    lines = ["import sys, types"]
    for module in modules[:-1]:
        name = module.__name__
        parts = name.split(".")
        for parent in (".".join(parts[:i]) for i in range(1, len(parts))):
            lines.append(f"sys.modules.setdefault({parent!r}, types.ModuleType({parent!r}))")
        lines += [f"_m = sys.modules[{name!r}] = types.ModuleType({name!r})",
                  f"exec(compile({Path(module.__file__).read_text()!r}, {name!r}, 'exec'), _m.__dict__)"]
    main = modules[-1]
    lines.append(f"exec(compile({Path(main.__file__).read_text()!r}, {main.__name__!r}, 'exec'), "
                 f"{{'__name__': '__main__'}})")
    return "\n".join(lines) + "\n"


def download_remotely(remote: Remote, layout: Layout, config: dict) -> None:
    """The host fetches the archive itself; what it needs travels on the SSH channel's stdin only,
    and for Kaggle that is a signed link resolved here (deploy/dataset/kaggle.py), never the account's key."""
    ds = config["dataset"]
    if ds["url"] and ds["token_env"]:
        refuse_plain_http(ds["url"], "the dataset credentials", "dataset.url")
    spec = dataset_source.for_host(ds["url"], ds["kaggle"], ds["token_env"], os.environ)
    py = Layout.host_python(config)
    print(f"the host downloads the dataset from {download_dataset.redact(spec['url'])}")
    program = host_program(safe_tree, download_dataset)
    script = f"{q(py)} -c {q(program)} --dest {rpath(layout.dataset)} --work {rpath(layout.workspace + '/.download')}"
    code = remote.stream(script, stdin=(json.dumps(spec) + "\n").encode())
    if code is None:
        raise UsageError("lost the connection during the dataset download: run `sync` again to resume it")
    if code != 0:
        raise UsageError("the host could not download the dataset (see the line above): fix dataset.url / "
                         "dataset.kaggle or the credentials, then run `sync` again")


def ensure_venv(remote: Remote, layout: Layout) -> None:
    """remote.python: auto-venv — a virtualenv on the host from pyproject.toml, rebuilt when it changes."""
    script = f"""
set -e
venv={rpath(layout.venv)}; app={rpath(layout.app)}
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then extras=train,gpu; else extras=train,cpu; fi
stamp="$(sha256sum "$app/pyproject.toml" | cut -c1-64) $extras"
if [ "$(cat "$venv/.deploy-stamp" 2>/dev/null)" = "$stamp" ]; then echo "virtualenv up to date ($extras)"; exit 0; fi
echo "building the virtualenv $venv with [$extras] (first time: several minutes)"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --progress-bar off "$app[$extras]"
printf '%s\\n' "$stamp" > "$venv/.deploy-stamp"
"""
    code = remote.stream(script)
    if code != 0:
        raise UsageError("building the virtualenv on the host failed (see above): check that python3-venv is "
                         "installed there, or set remote.python to an interpreter with the trainer's packages")


def run_sync(remote: Remote, layout: Layout, config: dict, state, bwlimit: int | None = None,
             code_only: bool = False, delete_remote: bool = False) -> Transfer:
    require_local_rsync()
    ds = config["dataset"]
    cache = Path(ds["cache"]) if ds["cache"] and not code_only else None
    dataset = Path(ds["path"]) if ds["path"] and not code_only and not (ds["url"] or ds["kaggle"]) else None
    if dataset is not None and cache is not None and not dataset.is_dir():
        dataset = None  # only the feature cache: it is all the run needs
    folders = [(p, target) for p, target in ((cache, layout.cache), (dataset, layout.dataset)) if p is not None]
    remote_files = prepare(remote, layout, folders)
    if dataset is not None and not delete_remote:  # before anything is sent: refuse, change nothing
        check_deletions(remote, dataset, layout.dataset, "dataset", remote_files[layout.dataset])

    total = Transfer()
    parts: dict[str, int] = {}
    t = sync_code(remote, layout, config)
    print(f"code: sent {human(t.bytes_sent)}")
    total += t
    parts["code"] = t.bytes_sent
    if cache is not None:
        t = sync_folder(remote, cache, layout.cache, "feature cache", bwlimit, mirror=False)
        total += t
        parts["cache"] = t.bytes_sent
    if dataset is not None:
        t = sync_folder(remote, dataset, layout.dataset, "dataset", bwlimit)
        total += t
        parts["dataset"] = t.bytes_sent
    source = None
    if not code_only:
        if ds["url"] or ds["kaggle"]:
            download_remotely(remote, layout, config)
            source = "download"
        elif dataset is not None:
            source = "local"
        elif cache is not None:
            print("no local dataset: the run trains from the synced feature cache (extract is skipped)")
            source = "cache"
    if config["remote"]["python"] == AUTO_VENV:
        ensure_venv(remote, layout)
    elif config["remote"]["python"] == OVERLAY:
        ensure_overlay(remote, layout, config)
    print(f"sync done: {total.bytes_sent} bytes sent ({human(total.bytes_sent)}), "
          f"{human(total.total_size)} in the synced files")
    last = state.data.get("last_sync") or {}
    state.data["last_sync"] = {"bytes_sent": total.bytes_sent, "parts": parts, "total_size": total.total_size,
                               "source": source or last.get("source")}
    state.save()
    return total
