"""The on-instance watchdog: stops (never destroys) a rented Vast.ai instance nobody is using.

Runs ON the instance, next to training: `python -m deploy up` copies this one file to
<workspace>/.watchdog/ with a config.json and starts it detached; the container's onstart
script starts it again at every container start (after a stop, or an outbid). It is
self-contained on purpose (stdlib + the `vastai` SDK): deploy/ itself is not on the instance.

It stops the instance, so GPU billing ends while the disk and the results stay, when
- nothing has happened for `idle_grace_minutes`: no training run alive (deploy/runstate.py
  decides, as everywhere else), no rsync (sync/fetch), no host-side dataset download or
  auto-venv build, no interactive SSH session, and no `deploy` command touched
  .watchdog/activity (every sync/fetch does) - e.g. the run ended and nobody fetched;
- the rental reaches `max_hours` or costs `budget_usd` (the price times the time the
  instance has run, counted across stops). Right after a (re)start with nothing running
  the cap waits one grace period, so a `fetch` of a capped instance can still finish; and
  a capped instance never relaunches training (it would only be stopped again at once).

It must outlive everything but its instance: each look around is guarded, the billed time
is counted in memory when state.json cannot be written (a full disk, which is also what
typically kills training), and every failure is logged and retried.

Credentials: ONLY the instance-scoped key Vast.ai puts into every container
(CONTAINER_API_KEY, with CONTAINER_ID), read from the environment, the container's init
process or /etc/environment. The user's key is never on the instance; VAST_API_KEY is
dropped from the environment here so the SDK cannot pick it up either.

When an interruptible (bid) instance comes back after an outbid, a run that was cut off
(its pid gone, no exit_status) is relaunched with `train --resume` when `auto_resume` is set.

Everything it decides goes to .watchdog/watchdog.log; its last look around (and which
rule will stop the instance, when) is in .watchdog/status.json, shown by `python -m deploy status`.
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

try:  # on the instance, runstate.py is copied next to this file; in the project it is deploy/runstate.py
    from deploy import runstate
except ImportError:
    import runstate

RUN_MARK = runstate.RUN_MARK
SECRET_ENV = ("CONTAINER_API_KEY", "VAST_API_KEY")  # never handed to a relaunched training run


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
    """Run name -> running | ended | interrupted, by deploy/runstate.py's rule (the one `logs`,
    `fetch` and `start` use); a folder that never wrote a pid is no run yet."""
    out = {}
    for d in sorted((workspace / "runs").glob("*/")):
        state, _ = runstate.local_state(str(d))
        if state == "running":
            out[d.name] = "running"
        elif state in ("finished", "failed"):
            out[d.name] = "ended"
        elif state == "stopped" and (d / "pid").is_file():
            out[d.name] = "interrupted"
    return out


def transfers_or_sessions(workspace: Path, watch_ssh_sessions: bool) -> list[str]:
    """rsync servers reading/writing the workspace, the host downloading the dataset or building the
    auto-venv (deploy/sync.py starts both), interactive SSH sessions: someone is here."""
    found = []
    ws = str(workspace)
    for pid, cmd in _processes():
        if pid == os.getpid():
            continue
        if f"{ws}/.download" in cmd:  # download_dataset.py --work <workspace>/.download
            found.append("dataset download")
        elif f"{ws}/venv/" in cmd or cmd.endswith(f"{ws}/venv "):  # python3 -m venv <ws>/venv; <ws>/venv/bin/pip
            found.append("virtualenv build")
        elif "rsync" in cmd and "--server" in cmd:
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
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}  # the instance key stays with us
    subprocess.Popen(["setsid", "nohup", "sh", str(resume), RUN_MARK], cwd=run_dir, stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)
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
        self.last_stop_attempt: dict | None = None
        self._write_failed: set[str] = set()

    def _load_state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def _write(self, name: str, data: dict) -> bool:
        """Atomic JSON write; a failure (full disk) is logged once and survived: the time is in memory."""
        tmp = self.home / (name + ".tmp")
        try:
            with open(tmp, "w") as fh:
                json.dump(data, fh, indent=2)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.home / name)
        except OSError as exc:
            if name not in self._write_failed:
                log(f"cannot write {name} ({exc}); going on with what is in memory")
            self._write_failed.add(name)
            return False
        if name in self._write_failed:
            log(f"{name} can be written again")
            self._write_failed.discard(name)
        return True

    def cap_reason(self) -> str | None:
        hours = self.run_seconds / 3600
        spent = hours * float(self.cfg.get("price_per_hour") or 0.0)
        if self.cfg.get("max_hours") and hours >= float(self.cfg["max_hours"]):
            return f"max_hours {self.cfg['max_hours']} reached ({hours:.2f} h rented)"
        if self.cfg.get("budget_usd") and spent >= float(self.cfg["budget_usd"]):
            return f"budget_usd {self.cfg['budget_usd']} reached (${spent:.2f} spent)"
        return None

    def next_stop(self, now: float, busy: bool, last_activity: float) -> dict | None:
        """Which rule will stop the instance, and when (epoch seconds), as things stand now."""
        grace_s = float(self.cfg["idle_grace_minutes"]) * 60
        price = float(self.cfg.get("price_per_hour") or 0.0)
        hours = self.run_seconds / 3600
        rules = []
        if self.cfg.get("max_hours"):
            rules.append(("max_hours", now + (float(self.cfg["max_hours"]) - hours) * 3600))
        if self.cfg.get("budget_usd") and price > 0:
            rules.append(("budget_usd", now + (float(self.cfg["budget_usd"]) / price - hours) * 3600))
        if self.cap_reason() and not busy:
            rules = [("cap reached, grace for a fetch", self.started + grace_s)]
        if not busy:
            rules.append(("idle_grace_minutes", last_activity + grace_s))
        if not rules:
            return None
        rule, at = min(rules, key=lambda r: r[1])
        return {"rule": rule, "at": max(at, now)}

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
        self._write("status.json", {"at": now, "pid": os.getpid(), "training": training, "activity": others,
                                    "idle_seconds": idle_s, "hours": hours, "spent_usd": spent, "runs": run_states,
                                    "will_stop": self.next_stop(now, bool(training or others), last_activity),
                                    "last_stop_attempt": self.last_stop_attempt})
        capped = self.cap_reason()
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
        capped = self.cap_reason()
        if capped:  # relaunching would count as activity and be stopped again at once, fetch never finishing
            log(f"{capped}: interrupted runs are NOT relaunched; the instance stays up for a fetch only")
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
    try:
        (home / "watchdog.pid").write_text(str(os.getpid()))
    except OSError as exc:  # a full disk: watch anyway (`status` then takes the pid from status.json)
        log(f"cannot write watchdog.pid ({exc})")
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
    try:
        dog.resume_interrupted()
    except Exception as exc:  # noqa: BLE001  (a failed relaunch must not take the cost guard down with it)
        log(f"relaunching interrupted runs failed ({type(exc).__name__}: {exc})")
    while True:
        try:
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
                    dog.last_stop_attempt = {"at": time.time(), "reason": reason,
                                             "result": f"failed: {type(exc).__name__}: {exc}"[:300]}
                    if code in (401, 404):  # the instance (and with it its key) is gone: nothing bills any more
                        log(f"instance {instance_id} no longer exists (HTTP {code}); exiting")
                        return 0
                    log(f"stop failed ({type(exc).__name__}: {exc}); retrying in {poll:.0f}s")
                else:
                    dog.last_stop_attempt = {"at": time.time(), "reason": reason, "result": "stopped"}
                    dog._write("stopped.json", {"at": time.time(), "reason": reason, "result": "stopped"})
                    log("stopped: GPU billing ended; the disk and results stay until `python -m deploy down`")
                    return 0
        except Exception as exc:  # noqa: BLE001  (the watchdog outlives everything but its instance)
            log(f"look-around failed ({type(exc).__name__}: {exc}); trying again in {poll:.0f}s")
        if args.once:
            return 0
        time.sleep(poll)


if __name__ == "__main__":
    sys.exit(main())
