"""Everything a run will use, checked on the laptop before anything is rented, connected to or started.

`check` (both providers), `up` (before renting or connecting, `--dry-run` too), `run`,
`sync` and `start` call these, so a mistake costs a second here instead of GPU hours there:

- `train.args`: parsed by the trainer's own parser, with `train.config` loaded and
  validated by the trainer's own schema (`python -m trainer train --dry-run`, as the run
  script will call it: deploy/local/trainer_cli.py); with a local `dataset.cache`, the cache's
  feature settings against the config's too.
- `dataset.path`: `python -m trainer scan` (layout, class names, unreadable files, label
  conflicts, duplicates, long clips; the job model reads its durations and resolutions).
- `remote.python`: something the run script can run (one path or command name, no
  arguments, no `~`).
- `ssh.host`: set, and not the shipped placeholder `gpu-box` (unless it names a host here).
- provider `ssh`, in `check`: a real read-only visit (`ssh_host`): the host answers, the key
  is accepted, which Python and TensorFlow, GPUs (nvidia-smi), free disk, rsync. It writes
  nothing there, and pins no host key in .deploy/ (`up` does that).

Each finding is one line (`ok`, `warn`, `FIX`), as deploy/check.py prints them.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import socket
import tempfile
import threading
from pathlib import Path

from deploy.config import OVERLAY, VENV_MODES
from deploy.errors import UsageError
from deploy.local import trainer_cli

# The example value of ssh.host in the shipped configs/deploy.yaml (and the README's first run).
PLACEHOLDER_HOSTS = ("gpu-box",)
# Flags the run script sets itself (deploy/start.py): in train.args they would move the
# run's outputs where nothing fetches them, or resume what `start` did not ask to resume.
RESERVED_TRAIN_FLAGS = {"--cache-dir": "the run's cache is <workspace>/cache",
                        "--output-dir": "the run's folder is <workspace>/runs/<run>, where fetch looks",
                        "--config": "set train.config instead", "--resume": "use `python -m deploy start --resume`",
                        "--dry-run": "the run would train nothing"}
MAX_HOST_TEXT = 160


class Findings:
    """ok / warn / FIX lines, printed as they come (deploy/check.py's format)."""

    def __init__(self, echo: tuple[str, ...] = ("ok", "warn", "FIX")):
        self.lines: list[tuple[str, str, str]] = []
        self.echo = echo  # the levels printed as they come

    def add(self, level: str, what: str, text: str) -> None:
        self.lines.append((level, what, text))
        if level in self.echo:
            print(f"{level:<5} {what:<12} {text}", flush=True)

    @property
    def failed(self) -> bool:
        return any(level == "FIX" for level, _, _ in self.lines)

    def refuse(self, done: str) -> None:
        """Raise the first FIX as the one-line error; the others are printed above it."""
        fixes = [f"{what}: {text}" for level, what, text in self.lines if level == "FIX"]
        if not fixes:
            return
        for extra in fixes[1:]:
            print(f"FIX   {extra}", flush=True)
        more = f"; {len(fixes) - 1} more above" if len(fixes) > 1 else ""
        raise UsageError(f"{fixes[0]} ({done}{more}; `python -m deploy check` shows every finding)")


# -- the local half: no network ---------------------------------------------------------
def run_local(config: dict, f: Findings, dataset: bool = True) -> dict | None:
    """train.args + train.config, remote.python, the ssh host's name, and (dataset=True) the dataset scan.

    Returns the scan's report (None when the dataset was not scanned)."""
    config_ok = check_train(config, f)
    check_python(config, f)
    if config["provider"] == "ssh":
        check_host_name(config, f)
    return check_dataset(config, f, config_ok) if dataset else None


def check_train(config: dict, f: Findings) -> bool:
    """True when train.config loads (the scan then uses its class names and extensions)."""
    tc = config["train"]
    for arg in tc["args"]:
        flag = arg.split("=", 1)[0]
        if flag in RESERVED_TRAIN_FLAGS:
            f.add("FIX", "train.args", f"{flag} is set by the run itself ({RESERVED_TRAIN_FLAGS[flag]}): remove it "
                                       f"from train.args")
            return Path(tc["config"]).is_file()
    out = trainer_cli.train_dry_run(config)
    shown = " ".join(tc["args"]) or "(none)"
    if out.ok:
        f.add("ok", "train", f"train.config {tc['config']} and train.args {shown} pass the trainer's own checks")
        return True
    if not out.ran:
        f.add("warn", "train", f"train.args and train.config not checked: {out.error}")
        return Path(tc["config"]).is_file()
    if out.error.startswith("config:"):
        f.add("FIX", "train.config", out.error)
        return False
    cache = config["dataset"].get("cache")
    if cache and str(cache) in out.error:  # the local feature cache the run would train on
        f.add("FIX", "dataset.cache", out.error)
        return True
    f.add("FIX", "train.args", f"{out.error} (train.args {shown}; `python -m trainer train --help` lists the flags)")
    return True


def check_python(config: dict, f: Findings) -> None:
    py = config["remote"]["python"]
    if py in VENV_MODES:
        f.add("ok", "python", f"remote.python: {py} (sync makes <workspace>/venv)")
        return
    problem = python_problem(py)
    if problem:
        f.add("FIX", "python", f"remote.python {py!r} {problem}")
    else:
        f.add("ok", "python", f"remote.python: {py}")


def python_problem(py: str) -> str | None:
    """Why the run script could not execute `py` as the interpreter, or None.

    The script runs it as one quoted word: an absolute path may hold any character (a space
    included), a bare command name is looked up on the host's PATH, and nothing is expanded.
    """
    if not py.strip() or "\n" in py or "\x00" in py:
        return "is empty or not one line: name the interpreter with the trainer's packages (e.g. python3)"
    if py.startswith("~"):
        return "starts with ~, which the quoted run script does not expand: write the full path (/home/you/...)"
    if py[1:3] in (":\\", ":/") or "\\" in py:
        return "is a Windows path; the host runs Linux: give the interpreter's path there"
    if py.startswith("/"):
        return None
    if "/" in py:
        return "is a relative path, which would be looked up from <workspace>/app on the host: give the absolute path"
    if any(ch.isspace() for ch in py) or any(ch in py for ch in ";|&$`<>'\"()"):
        return ("is not one program name: the run script runs it as a single quoted word, so arguments or shell "
                "syntax cannot go there; give the interpreter alone (or its absolute path, or overlay / auto-venv)")
    return None


def check_host_name(config: dict, f: Findings) -> None:
    host = config["ssh"].get("host")
    if not host:
        f.add("FIX", "ssh.host", "is not set: put your GPU box's address in the deploy config (ssh: {host: ...})")
        return
    if host in PLACEHOLDER_HOSTS and not _known_host(host):
        f.add("FIX", "ssh.host", f"{host!r} is the example from the shipped configs/deploy.yaml and names no host "
                                 f"here (no DNS name, no ~/.ssh/config entry): put your GPU box's address or alias")


def _known_host(name: str) -> bool:
    """Does `name` resolve, or is it a Host alias in ~/.ssh/config? (A lookup that hangs counts as no.)"""
    cfg = Path("~/.ssh/config").expanduser()
    if cfg.is_file():
        import paramiko

        try:
            ssh_config = paramiko.SSHConfig.from_path(str(cfg))
            if name in ssh_config.get_hostnames() and ssh_config.lookup(name).get("hostname", name) != name:
                return True
        except (OSError, ValueError, paramiko.SSHException):
            pass
    found: list[bool] = []

    def resolve() -> None:
        with contextlib.suppress(OSError, UnicodeError):
            socket.getaddrinfo(name, None)
            found.append(True)

    t = threading.Thread(target=resolve, daemon=True)
    t.start()
    t.join(3.0)
    return bool(found)


def check_dataset(config: dict, f: Findings, config_ok: bool = True) -> dict | None:
    """The scan's findings for dataset.path; returns the report (None when not scanned)."""
    ds = config["dataset"]
    if ds.get("url") or ds.get("kaggle"):
        f.add("ok", "dataset", "downloaded by the host itself (dataset.url / dataset.kaggle): scanned there by extract")
        return None
    path, cache = ds.get("path"), ds.get("cache")
    if not path or not Path(path).is_dir():
        if cache and Path(cache).is_dir():
            f.add("ok", "dataset", f"no dataset.path folder: the run trains from the feature cache {cache}")
            return None
        where = f"dataset.path {path}" if path else "dataset.path"
        if path and Path(path).exists():
            f.add("FIX", "dataset", f"{where} is a file: point it at the folder of class folders (or split folders)")
        else:
            f.add("FIX", "dataset", f"{where} does not exist (nor a dataset.cache): point it at your videos")
        return None
    out = trainer_cli.scan(str(path), config["train"]["config"] if config_ok else None)
    if not out.ran:
        f.add("warn", "dataset", f"not scanned: {out.error}")
        return None
    report = out.report
    if not report:  # discovery refused the layout before any report
        f.add("FIX", "dataset", out.error)
        return None
    for problem in report.get("problems", []):
        f.add("FIX", "dataset", problem)
    add_scan_findings(report, f)
    return report


def add_scan_findings(r: dict, f: Findings) -> None:
    counts = {c: sum(cells[c]["videos"] for cells in r["splits"].values()) for c in ("violent", "nonviolent")}
    hours = f", {r['duration_s'] / 3600:.1f} h of video" if r.get("probe") == "opencv" else ""
    res = ", ".join(f"{k} {v}" for k, v in list(r.get("resolutions", {}).items())[:3])
    f.add("ok", "dataset", f"{r['videos']:,} videos ({counts['violent']:,} violent, {counts['nonviolent']:,} "
                           f"non-violent; {r['layout']}), {r['bytes'] / 1e9:.2f} GB{hours}"
                           + (f"; {res}" if res else ""))
    if r.get("probe") != "opencv":
        f.add("warn", "dataset", f"durations and resolutions not read ({r.get('probe')})")
    if r.get("unreadable"):
        u = r["unreadable"]
        f.add("warn", "dataset", f"{len(u)} unreadable video(s), e.g. {u[0]['path']}: {u[0]['reason']} (extract "
                                 f"skips them; `python -m trainer scan {r['dataset']}` lists all)")
    if r.get("ignored"):
        parts = ", ".join(f"{ext} x{g['files']}" for ext, g in r["ignored"].items())
        f.add("warn", "dataset", f"files ignored, not videos by their extension: {parts} (add an extension under "
                                 f"data.video_extensions in the train config to use it)")
    if r.get("long_clips"):
        longest = max(c["duration_s"] for c in r["long_clips"])
        f.add("warn", "dataset", f"{len(r['long_clips'])} clip(s) up to {longest:.0f} s long: "
                                 f"{r['frames_per_video']} frames are sparse there (cut them into clips)")
    if r.get("duplicates"):
        f.add("warn", "dataset", f"{len(r['duplicates'])} video(s) stored more than once (kept in one split)")


def require(config: dict, dataset: bool = True) -> None:
    """For up / run / start: the local findings, refused with the first FIX (every FIX line is printed)."""
    f = Findings(echo=("warn",))
    run_local(config, f, dataset=dataset)
    f.refuse("nothing was rented, sent or started")


def require_dataset(config: dict) -> None:
    """For sync: refuse a dataset the run would refuse, before any byte is sent."""
    f = Findings(echo=())
    check_dataset(config, f, config_ok=Path(config["train"]["config"]).is_file())
    f.refuse("nothing was sent")


# -- the ssh host, visited read-only ------------------------------------------------------
def host_value(value: str) -> str:
    """A value the host sent, made safe for this terminal (deploy/host/host_text.py) and bounded."""
    from deploy.host import host_text

    text = host_text.one_line(value)
    return text[:MAX_HOST_TEXT] + ("..." if len(text) > MAX_HOST_TEXT else "")


def probe_script(config: dict) -> str:
    from deploy.host.layout import Layout
    from deploy.host.remote import q, rpath
    from deploy.start import _FIND_PACKAGES

    py = q(Layout.host_python(config))
    tf_version = ("import importlib.metadata as m\nfor n in ('tensorflow', 'tensorflow-cpu', 'tf-nightly', "
                  "'tensorflow-macos'):\n    try:\n        print(m.version(n)); break\n    except Exception:\n"
                  "        pass")
    return f"""
ws={rpath(config["remote"]["workspace"])}
d=$ws; while [ ! -d "$d" ] && [ "$d" != / ]; do d=$(dirname "$d"); done
[ -d "$ws" ] && echo workspace_exists=1
[ -w "$d" ] && echo writable=1
echo "disk_free_kb=$(df -Pk "$d" 2>/dev/null | awk 'NR==2{{print $4}}')"
echo "rsync=$(command -v rsync)"
echo "setsid=$(command -v setsid)"
echo "python=$({py} -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null)"
echo "tensorflow=$({py} -c {q(tf_version)} 2>/dev/null | head -n 1)"
echo "missing=$({py} -c {q(_FIND_PACKAGES)} 2>/dev/null)"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -n 16 | sed 's/^/gpu=/'
fi
"""


def ssh_host(provider, f: Findings, upload_bytes: int = 0) -> None:
    """Provider ssh, in `check`: connect with a throw-away copy of the pinned keys and look, changing nothing."""
    from deploy.host.hostcheck import MIN_PYTHON
    from deploy.host.remote import Remote, host_label, known_hosts_name

    from deploy.providers.base import Host

    config = provider.config
    ssh = config["ssh"]
    if not ssh.get("host") or any(w == "ssh.host" and lv == "FIX" for lv, w, _ in f.lines):
        return  # said above
    host = Host(host=ssh["host"], port=ssh["port"], user=ssh["user"], identity_file=ssh["identity_file"])
    with tempfile.TemporaryDirectory(prefix="deploy-check-") as tmp:
        known = Path(tmp) / "known_hosts"
        pinned = Path(provider.state.known_hosts)
        if pinned.is_file():
            shutil.copyfile(pinned, known)
        try:
            remote = Remote(host, known, config["ssh"]["connect_timeout"])
            with contextlib.redirect_stderr(io.StringIO()):  # the first-contact pin note names the temp file
                remote.connect(retry_for=0, quiet=True, refused_attempts=1)
        except UsageError as exc:
            f.add("FIX", "SSH", str(exc))
            return
        with remote:
            key = remote.conn.transport.get_remote_server_key()
            fp = key.fingerprint if hasattr(key, "fingerprint") else key.get_name()
            first = not pinned.is_file() or known_hosts_name(host) not in pinned.read_text()
            f.add("ok", "SSH", f"{host_label(host)} answers and accepts the key "
                               f"{host.identity_file or '(agent/default keys)'}; host key {fp}"
                               + (" (first contact: `up` pins it)" if first else " (as pinned)"))
            facts: dict = {"gpu": []}
            for line in remote.run(probe_script(config)).stdout.splitlines()[:64]:
                k, _, v = line.partition("=")
                if k == "gpu":
                    facts["gpu"].append(host_value(v))
                elif k:
                    facts[k] = host_value(v)
    _judge_host(config, facts, f, upload_bytes, MIN_PYTHON)


def _judge_host(config: dict, facts: dict, f: Findings, upload_bytes: int, min_python: tuple) -> None:
    from deploy.host.layout import Layout

    ws, py = config["remote"]["workspace"], config["remote"]["python"]
    probe_py = Layout.host_python(config)
    if not facts.get("writable"):
        f.add("FIX", "workspace", f"remote.workspace {ws!r} cannot be created or written there: pick a writable folder")
    else:
        f.add("ok", "workspace", f"{ws} {'exists' if facts.get('workspace_exists') else 'can be created'}")
    for tool, fix in (("rsync", "apt-get install rsync"), ("setsid", "apt-get install util-linux")):
        if not facts.get(tool):
            f.add("FIX", tool, f"not installed on the host: {fix} there")
    if facts.get("rsync"):
        f.add("ok", "rsync", f"{facts['rsync']} on the host")
    version = facts.get("python", "")
    if not version:
        f.add("FIX", "python", f"{probe_py!r} does not run on the host: set remote.python to an interpreter there")
    else:
        try:
            too_old = tuple(int(x) for x in version.split(".")[:2]) < min_python
        except ValueError:
            too_old = True
        if too_old:
            f.add("FIX", "python", f"{probe_py} is Python {version}; the trainer needs "
                                   f"{'.'.join(map(str, min_python))}+: set remote.python to a newer one")
        else:
            f.add("ok", "python", f"{probe_py}: Python {version}")
        tf, missing = facts.get("tensorflow", ""), facts.get("missing", "").split()
        if py == "auto-venv":
            f.add("ok", "tensorflow", "auto-venv: sync installs TensorFlow into <workspace>/venv")
        elif py == OVERLAY:
            f.add("ok" if tf else "FIX", "tensorflow", f"{probe_py} has TensorFlow {tf}: overlay adds only what it lacks"
                  if tf else f"{probe_py} has no TensorFlow, which overlay builds on: use auto-venv, or set "
                             f"remote.base_python to a Python with TensorFlow")
        elif missing:
            f.add("FIX", "tensorflow", f"{probe_py} lacks {', '.join(missing)}: use the project's image, "
                                       f"`remote.python: auto-venv`, or an interpreter that has them")
        else:
            f.add("ok", "tensorflow", f"TensorFlow {tf or '(version unknown)'} and the trainer's packages")
    gpus = facts.get("gpu") or []
    if gpus:
        f.add("ok", "GPUs", f"{len(gpus)}: {', '.join(gpus[:4])}" + (" ..." if len(gpus) > 4 else ""))
    else:
        f.add("warn", "GPUs", "none visible (no nvidia-smi, or it lists none): training would run on the CPU")
    try:
        free = int(facts.get("disk_free_kb") or 0) * 1024
    except ValueError:
        free = 0
    need = upload_bytes
    if free and need and free < need * 1.1:
        f.add("FIX", "disk", f"{free / 1e9:.1f} GB free there, the dataset alone is {need / 1e9:.1f} GB: free space "
                             f"or pick another remote.workspace")
    elif free:
        f.add("ok", "disk", f"{free / 1e9:.1f} GB free" + (f" (dataset {need / 1e9:.1f} GB)" if need else ""))
