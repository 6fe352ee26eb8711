"""The on-instance watchdog: stops (never destroys) a rented Vast.ai instance nobody is using.

Runs ON the instance, next to training: `python -m deploy up` copies this one file to
<workspace>/.watchdog/ with a config.json and starts it detached; the container's onstart
script starts it again at every container start (after a stop, or an outbid). It is
self-contained on purpose (stdlib + the `vastai` SDK): deploy/ itself is not on the instance.

It stops the instance, so GPU billing ends while the disk and the results stay, when
- nothing has happened for `idle_grace_minutes`: no training run alive, no rsync
  (sync/fetch) and no interactive SSH session, and no `deploy` command touched
  .watchdog/activity (every sync/fetch does) - e.g. the run ended and nobody fetched;
- the rental reaches `max_hours` or costs `budget_usd` (the price times the time the
  instance has run, counted across stops). Right after a (re)start with nothing running
  the cap waits one grace period, so a `fetch` of a capped instance can still finish.

Credentials: ONLY the instance-scoped key Vast.ai puts into every container
(CONTAINER_API_KEY, with CONTAINER_ID), read from the environment, the container's init
process or /etc/environment. The user's key is never on the instance; VAST_API_KEY is
dropped from the environment here so the SDK cannot pick it up either.

When an interruptible (bid) instance comes back after an outbid, a run that was cut off
(its pid gone, no exit_status) is relaunched with `train --resume` when `auto_resume` is set.

Everything it decides goes to .watchdog/watchdog.log; the last decision is in
.watchdog/status.json (read by `python -m deploy status` over SSH if wanted).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

RUN_MARK = "deploy-run.sh"  # deploy/start.py's run script marker, seen in /proc/<pid>/cmdline


def log(msg: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} watchdog: {msg}", flush=True)


# -- the instance's own key ---------------------------------------------------------------
def _parse_env_file(text: str, sep: str) -> dict:
    out = {}
    for item in text.split(sep):
        item = item.strip()
        if item.startswith("export "):
            item = item[len("export "):]
        if "=" in item:
            k, v = item.split("=", 1)
            out[k.strip()] = v.strip().strip('"').strip("'")
    return out


def container_credentials() -> tuple[str | None, str | None]:
    """(CONTAINER_API_KEY, CONTAINER_ID) from this process, the container's PID 1, or /etc/environment."""
    sources = [dict(os.environ)]
    for path, sep in (("/proc/1/environ", "\0"), ("/etc/environment", "\n")):
        try:
            sources.append(_parse_env_file(Path(path).read_text(errors="replace"), sep))
        except OSError:
            pass
    for env in sources:
        if env.get("CONTAINER_API_KEY"):
            return env["CONTAINER_API_KEY"], env.get("CONTAINER_ID")
    return None, None


# -- what is happening on the instance -----------------------------------------------------
def _processes():
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                yield int(entry.name), (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue


def runs(workspace: Path) -> dict[str, str]:
    """Run name -> running | ended | interrupted (deploy/start.py's pid / exit_status files)."""
    out = {}
    for d in sorted((workspace / "runs").glob("*/")):
        if (d / "exit_status").is_file():
            out[d.name] = "ended"
            continue
        try:
            pid = int((d / "pid").read_text().strip())
        except (OSError, ValueError):
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            cmd = b""
        out[d.name] = "running" if RUN_MARK.encode() in cmd else "interrupted"
    return out


def transfers_or_sessions(workspace: Path, watch_ssh_sessions: bool) -> list[str]:
    """rsync servers reading/writing the workspace, and interactive SSH sessions: someone is here."""
    found = []
    ws = str(workspace)
    for pid, cmd in _processes():
        if pid == os.getpid():
            continue
        if "rsync" in cmd and "--server" in cmd:
            try:
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except OSError:
                cwd = ""
            if ws in cmd or cwd.startswith(ws):
                found.append("rsync")
        elif watch_ssh_sessions and re.match(r"sshd: \S+@pts/", cmd):
            found.append("ssh session")
    return found


def last_end_time(workspace: Path) -> float:
    times = [p.stat().st_mtime for p in (workspace / "runs").glob("*/exit_status")]
    return max(times, default=0.0)


# -- resuming after an outbid ----------------------------------------------------------------
def resume_script(text: str) -> str | None:
    """deploy/start.py's run.sh with `train --resume`; None when its train line is not recognised."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "-m trainer train " in line:
            if "--resume" not in line:
                lines[i] = line.replace("-m trainer train ", "-m trainer train --resume ", 1)
            return "\n".join(lines) + "\n"
    return None


def relaunch_with_resume(run_dir: Path) -> bool:
    """Start an interrupted run again from its last checkpoint."""
    try:
        text = resume_script((run_dir / "run.sh").read_text())
    except OSError:
        return False
    if text is None:
        return False
    resume = run_dir / "run-resume.sh"
    resume.write_text(text)
    (run_dir / "pid").unlink(missing_ok=True)
    subprocess.Popen(["setsid", "nohup", "sh", str(resume), RUN_MARK], cwd=run_dir, stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    return True


# -- the loop ----------------------------------------------------------------------------------
class Watchdog:
    def __init__(self, cfg: dict, home: Path):
        self.cfg = cfg
        self.home = home
        self.workspace = Path(os.path.expanduser(cfg["workspace"]))
        self.state_file = home / "state.json"
        self.started = time.time()
        state = self._load_state()
        if "run_seconds" not in state:
            # first start: the instance has been billed since it was created
            state["run_seconds"] = max(0.0, self.started - float(cfg.get("rented_since") or self.started))
        self.run_seconds = float(state["run_seconds"])
        self.last_tick = self.started
        self.last_busy = self.started

    def _load_state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def _write(self, name: str, data: dict) -> None:
        tmp = self.home / (name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, self.home / name)

    def tick(self, now: float) -> str | None:
        """One look around; the reason to stop, or None."""
        self.run_seconds += max(0.0, now - self.last_tick)
        self.last_tick = now
        self._write("state.json", {"run_seconds": self.run_seconds})
        run_states = runs(self.workspace)
        training = [r for r, s in run_states.items() if s == "running"]
        others = transfers_or_sessions(self.workspace, self.cfg.get("watch_ssh_sessions", True))
        if training or others:
            self.last_busy = now
        try:
            touched = (self.home / "activity").stat().st_mtime
        except OSError:
            touched = 0.0
        last_activity = max(self.last_busy, touched, last_end_time(self.workspace))
        idle_s = now - last_activity
        hours = self.run_seconds / 3600
        spent = hours * float(self.cfg.get("price_per_hour") or 0.0)
        grace_s = float(self.cfg["idle_grace_minutes"]) * 60
        self._write("status.json", {"at": now, "training": training, "activity": others, "idle_seconds": idle_s,
                                    "hours": hours, "spent_usd": spent, "runs": run_states})
        capped = None
        if self.cfg.get("max_hours") and hours >= float(self.cfg["max_hours"]):
            capped = f"max_hours {self.cfg['max_hours']} reached ({hours:.2f} h rented)"
        elif self.cfg.get("budget_usd") and spent >= float(self.cfg["budget_usd"]):
            capped = f"budget_usd {self.cfg['budget_usd']} reached (${spent:.2f} spent)"
        if capped and (training or now - self.started >= grace_s):
            return capped
        if not training and not others and idle_s >= grace_s:
            what = "the run ended" if last_end_time(self.workspace) else "nothing ran"
            return f"{what} and nothing happened for {idle_s / 60:.1f} min (idle_grace_minutes " \
                   f"{self.cfg['idle_grace_minutes']})"
        return None

    def resume_interrupted(self) -> None:
        if not self.cfg.get("auto_resume"):
            return
        for run, s in runs(self.workspace).items():
            if s == "interrupted":
                ok = relaunch_with_resume(self.workspace / "runs" / run)
                log(f"run {run} was cut off (instance stopped or outbid): "
                    + ("relaunched with train --resume" if ok else "could not relaunch it; "
                       "`python -m deploy start --resume` continues it"))


def stop_instance(cfg: dict, key: str, instance_id: int) -> None:
    from vastai import VastAI

    VastAI(api_key=key, server_url=cfg["server_url"], retry=5, raw=True, quiet=True).stop_instance(instance_id)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="config.json written by `python -m deploy up`")
    p.add_argument("--poll-seconds", type=float, default=None)
    p.add_argument("--once", action="store_true", help="look once, act, and exit (for checks by hand)")
    args = p.parse_args(argv)
    os.environ.pop("VAST_API_KEY", None)  # the user's key must never be used from the instance

    cfg_path = Path(args.config).absolute()
    cfg = json.loads(cfg_path.read_text())
    home = cfg_path.parent
    (home / "watchdog.pid").write_text(str(os.getpid()))
    key, container_id = container_credentials()
    if not key:
        log("no CONTAINER_API_KEY in this container: cannot stop the instance by itself; exiting "
            "(the cost guards are inactive: `python -m deploy down` when done)")
        return 2
    try:
        import vastai  # noqa: F401  (checked now: a missing SDK must not surface only when it is time to stop)
    except ImportError:
        log("the vastai SDK is not installed in this image (pip install vastai): cannot stop the instance; "
            "exiting (the cost guards are inactive: `python -m deploy down` when done)")
        return 2
    instance_id = int(container_id or cfg["instance_id"])
    poll = args.poll_seconds or float(cfg.get("poll_seconds") or 30)
    dog = Watchdog(cfg, home)
    log(f"watching instance {instance_id}: max_hours={cfg.get('max_hours')} budget_usd={cfg.get('budget_usd')} "
        f"idle_grace_minutes={cfg['idle_grace_minutes']} price ${float(cfg.get('price_per_hour') or 0):.3f}/h")
    dog.resume_interrupted()
    while True:
        if not cfg_path.exists():  # the workspace was removed: nothing left to watch
            log("config.json is gone; exiting")
            return 0
        reason = dog.tick(time.time())
        if reason:
            log(f"stopping instance {instance_id}: {reason}")
            try:
                stop_instance(cfg, key, instance_id)
            except Exception as exc:  # keep watching and try again: a stop that failed costs money
                code = getattr(getattr(exc, "response", None), "status_code", None)
                if code in (401, 404):  # the instance (and with it its key) is gone: nothing bills any more
                    log(f"instance {instance_id} no longer exists (HTTP {code}); exiting")
                    return 0
                log(f"stop failed ({type(exc).__name__}: {exc}); retrying in {poll:.0f}s")
            else:
                dog._write("stopped.json", {"at": time.time(), "reason": reason})
                log("stopped: GPU billing ended; the disk and results stay until `python -m deploy down`")
                return 0
        if args.once:
            return 0
        time.sleep(poll)


if __name__ == "__main__":
    sys.exit(main())
