"""The on-instance watchdog: stops (never destroys) a rented Vast.ai instance nobody is using.

Runs ON the instance, next to training: `python -m deploy up` copies this one file to
<workspace>/.watchdog/ with a config.json and starts it detached; the container's onstart
script starts it again at every container start (after a stop, or an outbid), and `start`
again whenever it is not alive. It needs nothing but a Python >= 3.8 and its standard library:
Vast's own images have no importable `vastai` (vast-ai/base-image Dockerfile:283-293 clones the
CLI to /opt/vast-cli and runs it with the system Python), and deploy/ is not on the instance.

It stops the instance, so GPU billing ends while the disk and the results stay, when
- nothing has happened for `idle_grace_minutes`: no training run alive (deploy/host/shipped/runstate.py
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
(CONTAINER_API_KEY, with CONTAINER_ID; vast-ai/docs guides/instances/docker-environment.mdx:112-113),
read from the environment, the container's init process or /etc/environment. That key "can only
start, stop, or destroy that specific instance" (api-reference/hello-world.mdx:112) and show it
(docker-environment.mdx:128). The stop is the documented call (hello-world.mdx:173-180,
openapi/yaml/stop_instance.yaml): PUT {server}/api/v0/instances/{id}/ with {"state": "stopped"} and
`Authorization: Bearer <key>`, through urllib. The user's key is never on the instance, and
VAST_API_KEY is dropped from the environment here.

A refused key (HTTP 401) is retried with a growing pause and shown in status.json (`api`):
it never means "the instance is gone" (only a 404 does). Its config.json and state.json are
checked before use: a value that is not a finite, non-negative number is said and ignored
(state.json's billed time is then counted from `rented_since`), so the caps fire on the valid
numbers whatever the files hold.

When an interruptible (bid) instance comes back after an outbid, a run that was cut off
(its pid gone, no exit_status) is relaunched with `train --resume` when `auto_resume` is set.

Everything it decides goes to .watchdog/watchdog.log; its last look around (and which
rule will stop the instance, when) is in .watchdog/status.json, shown by `python -m deploy status`.

One file because it is copied to the instance as that one file and run there with a bare
interpreter: splitting it would mean shipping and keeping a package in step on a host where
deploy/ is not installed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

try:  # on the instance, runstate.py is copied next to this file; in the project it is deploy/host/shipped/runstate.py
    from deploy.host.shipped import runstate
except ImportError:
    import runstate

RUN_MARK = runstate.RUN_MARK
SECRET_ENV = ("CONTAINER_API_KEY", "VAST_API_KEY")  # never handed to a relaunched training run
MAX_BACKOFF_S = 600.0   # a refused or failing API call is retried at most this far apart
API_TIMEOUT_S = 30.0
DEFAULT_GRACE_MINUTES = 30.0


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
    """Run name -> running | ended | interrupted, by deploy/host/shipped/runstate.py's rule (the one `logs`,
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


# -- what config.json and state.json may hold -------------------------------------------------
def finite(value) -> float | None:
    """A finite, non-negative number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) and value >= 0 else None


NUMBERS = ("max_hours", "budget_usd", "price_per_hour", "idle_grace_minutes", "poll_seconds", "rented_since")


def checked_config(cfg: dict) -> tuple[dict, list[str]]:
    """config.json with every number it names checked: (usable config, what was ignored and why)."""
    out, said = dict(cfg), []
    for name in NUMBERS:
        if cfg.get(name) is None and not (name == "idle_grace_minutes" and name in cfg):
            continue
        good = finite(cfg[name])
        if good is None:
            said.append(f"config.json: {name} {cfg[name]!r} is not a finite non-negative number; ignored")
        out[name] = good
    if out.get("idle_grace_minutes") is None:  # the one rule that always applies
        out["idle_grace_minutes"] = DEFAULT_GRACE_MINUTES
    return out, said


# -- the loop ----------------------------------------------------------------------------------
class Watchdog:
    def __init__(self, cfg: dict, home: Path):
        self.cfg = cfg
        self.home = home
        self.workspace = Path(os.path.expanduser(cfg["workspace"]))
        self.state_file = home / "state.json"
        self.started = time.time()
        seconds = self._load_state()
        if seconds is None:
            # first start (or an unusable state.json): the instance has been billed since it was created
            seconds = max(0.0, self.started - (cfg.get("rented_since") or self.started))
        self.run_seconds = seconds
        self.last_tick = self.started
        self.last_busy = self.started
        self.last_stop_attempt: dict | None = None
        self.api: dict = {"ok": None}
        self._write_failed: set[str] = set()

    def _load_state(self) -> float | None:
        """state.json's billed seconds when it holds a usable number; None (said in the log) otherwise."""
        try:
            text = self.state_file.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log(f"cannot read state.json ({exc}); counting the billed time from rented_since")
            return None
        try:
            state = json.loads(text)
        except ValueError:
            state = text[:40]
        seconds = finite(state.get("run_seconds")) if isinstance(state, dict) else None
        if seconds is None:
            shown = state.get("run_seconds") if isinstance(state, dict) else state
            log(f"state.json holds no usable run_seconds ({shown!r}); counting the billed time from rented_since")
        return seconds

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
        spent = hours * (self.cfg.get("price_per_hour") or 0.0)
        if self.cfg.get("max_hours") is not None and hours >= self.cfg["max_hours"]:
            return f"max_hours {self.cfg['max_hours']} reached ({hours:.2f} h rented)"
        if self.cfg.get("budget_usd") is not None and self.cfg.get("price_per_hour") and spent >= self.cfg["budget_usd"]:
            return f"budget_usd {self.cfg['budget_usd']} reached (${spent:.2f} spent)"
        return None

    def next_stop(self, now: float, busy: bool, last_activity: float) -> dict | None:
        """Which rule will stop the instance, and when (epoch seconds), as things stand now."""
        grace_s = self.cfg["idle_grace_minutes"] * 60
        price = self.cfg.get("price_per_hour") or 0.0
        hours = self.run_seconds / 3600
        rules = []
        if self.cfg.get("max_hours") is not None:
            rules.append(("max_hours", now + (self.cfg["max_hours"] - hours) * 3600))
        if self.cfg.get("budget_usd") is not None and price > 0:
            rules.append(("budget_usd", now + (self.cfg["budget_usd"] / price - hours) * 3600))
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
        spent = hours * (self.cfg.get("price_per_hour") or 0.0)
        grace_s = self.cfg["idle_grace_minutes"] * 60
        self._write("status.json", {"at": now, "pid": os.getpid(), "training": training, "activity": others,
                                    "idle_seconds": idle_s, "hours": hours, "spent_usd": spent, "runs": run_states,
                                    "will_stop": self.next_stop(now, bool(training or others), last_activity),
                                    "last_stop_attempt": self.last_stop_attempt, "api": self.api})
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


# -- the Vast.ai API, as the instance's own key may use it --------------------------------------
class ApiError(Exception):
    def __init__(self, status: int | None, message: str):
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status


class InstanceApi:
    """GET (show) and PUT {"state": "stopped"} on /api/v0/instances/{id}/ with the instance's key."""

    def __init__(self, server_url: str, key: str, instance_id: int, poll: float):
        self.url = f"{server_url.rstrip('/')}/api/v0/instances/{instance_id}/"
        self.key = key
        self.poll = poll
        self.failures = 0
        self.state: dict = {"ok": None}

    def _call(self, method: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url, data=data, method=method,
                                     headers={"Authorization": f"Bearer {self.key}", "Accept": "application/json",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=API_TIMEOUT_S) as r:  # noqa: S310 (the configured API URL)
                answer = json.loads(r.read().decode() or "{}")
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")[:300]
            try:
                parsed = json.loads(text)
                text = str(parsed.get("msg") or parsed.get("error") or parsed.get("detail") or text) \
                    if isinstance(parsed, dict) else text
            except ValueError:
                pass
            raise ApiError(exc.code, re.sub(r"\s+", " ", text).strip() or exc.reason) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ApiError(None, f"{type(exc).__name__}: {exc}") from None
        if isinstance(answer, dict) and answer.get("success") is False:
            raise ApiError(200, str(answer.get("msg") or answer.get("error") or answer))
        return answer if isinstance(answer, dict) else {}

    def ready(self, now: float) -> bool:
        return now >= self.state.get("retry_at", 0.0)

    def attempt(self, what: str, method: str, body: dict | None = None) -> dict:
        """One call; on failure the next is allowed only after a pause doubling from the poll interval."""
        now = time.time()
        try:
            answer = self._call(method, body)
        except ApiError as exc:
            self.failures += 1
            wait = min(self.poll * 2 ** self.failures, MAX_BACKOFF_S)
            why = " (the instance key was refused: retrying, the instance is not taken for gone)" \
                if exc.status == 401 else ""
            self.state = {"ok": False, "at": now, "what": what, "error": f"{exc}"[:300] + why,
                          "status": exc.status, "failures": self.failures, "retry_at": now + wait}
            raise
        self.failures = 0
        self.state = {"ok": True, "at": now, "what": what}
        return answer


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="config.json written by `python -m deploy up`")
    p.add_argument("--poll-seconds", type=float, default=None)
    p.add_argument("--once", action="store_true", help="look once, act, and exit (for checks by hand)")
    args = p.parse_args(argv)
    os.environ.pop("VAST_API_KEY", None)  # the user's key must never be used from the instance

    cfg_path = Path(args.config).absolute()
    try:
        raw = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as exc:
        log(f"cannot read {cfg_path} ({exc}); exiting: `python -m deploy start` installs it again")
        return 2
    cfg, said = checked_config(raw if isinstance(raw, dict) else {})
    for line in said:
        log(line)
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
        instance_id = int(container_id or cfg["instance_id"])
    except (KeyError, TypeError, ValueError):
        log("no CONTAINER_ID and no instance_id in config.json: cannot tell which instance to stop; exiting")
        return 2
    poll = args.poll_seconds or cfg.get("poll_seconds") or 30.0
    cfg.setdefault("workspace", str(home.parent))
    api = InstanceApi(str(cfg.get("server_url") or "https://console.vast.ai"), key, instance_id, poll)
    dog = Watchdog(cfg, home)
    log(f"watching instance {instance_id}: max_hours={cfg.get('max_hours')} budget_usd={cfg.get('budget_usd')} "
        f"idle_grace_minutes={cfg['idle_grace_minutes']} price ${cfg.get('price_per_hour') or 0:.3f}/h")
    try:  # the key is checked now, not first when it is time to stop (docker-environment.mdx:128: it may show)
        api.attempt("show instance", "GET")
    except ApiError as exc:
        if exc.status == 404:
            log(f"instance {instance_id} no longer exists (HTTP 404); exiting")
            return 0
        log(f"the instance API did not answer as expected ({exc}); the stop will be retried when due")
    dog.api = api.state
    try:
        dog.resume_interrupted()
    except Exception as exc:  # noqa: BLE001  (a failed relaunch must not take the cost guard down with it)
        log(f"relaunching interrupted runs failed ({type(exc).__name__}: {exc})")
    while True:
        pause = poll
        try:
            if not cfg_path.exists():  # the workspace was removed: nothing left to watch
                log("config.json is gone; exiting")
                return 0
            now = time.time()
            reason = dog.tick(now)
            if reason and api.ready(now):
                log(f"stopping instance {instance_id}: {reason}")
                try:
                    api.attempt("stop instance", "PUT", {"state": "stopped"})
                except ApiError as exc:
                    dog.last_stop_attempt = {"at": time.time(), "reason": reason, "result": f"failed: {exc}"[:300]}
                    if exc.status == 404:  # only a 404 means gone (a 401 is a refused key, retried)
                        log(f"instance {instance_id} no longer exists (HTTP 404); exiting")
                        return 0
                    log(f"stop failed ({exc}); retrying in {api.state['retry_at'] - time.time():.1f}s")
                else:
                    dog.last_stop_attempt = {"at": time.time(), "reason": reason, "result": "stopped"}
                    dog._write("stopped.json", {"at": time.time(), "reason": reason, "result": "stopped"})
                    log("stopped: GPU billing ended; the disk and results stay until `python -m deploy down`")
                    return 0
                dog.api = api.state
            if reason and not api.ready(time.time()):  # wake exactly when the next try is due
                pause = max(0.0, min(poll, api.state["retry_at"] - time.time()))
        except Exception as exc:  # noqa: BLE001  (the watchdog outlives everything but its instance)
            log(f"look-around failed ({type(exc).__name__}: {exc}); trying again in {poll:.0f}s")
        if args.once:
            return 0
        time.sleep(pause)


if __name__ == "__main__":
    sys.exit(main())
