"""`.deploy/`: what this project has deployed, so every command finds its target.

    .deploy/state.json    {"provider", "host": {...Host}, "workspace", "runs": {name: {...}},
                           "current_run", "<provider>": {...provider's own data}}
    .deploy/known_hosts   host keys pinned on first contact (OpenSSH format, shared by
                           paramiko and by the ssh that rsync runs)

Writes are atomic (temporary file + fsync + rename), so a crash or Ctrl-C never leaves
a torn state file. Nothing secret is ever stored here.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from deploy.errors import UsageError
from deploy.local import jsonfile
from deploy.providers.base import Host


# Vast.ai bills the GPU only while the instance runs; deploy/ keeps that time itself
# (providers/vast/wait.py), and these keys of the "vast" section are written by unlocked
# commands too (see State.update_ledger).
LEDGER_KEYS = ("running_since", "gpu_seconds")


def _ledger_of(vast: dict) -> dict:
    return {k: vast[k] for k in LEDGER_KEYS if k in vast}


def _put_ledger(vast: dict, ledger: dict) -> None:
    for k in LEDGER_KEYS:
        vast.pop(k, None)
    vast.update(ledger)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class State:
    def __init__(self, root: str | os.PathLike = ".deploy"):
        self.root = Path(root)
        self.path = self.root / "state.json"
        self.known_hosts = self.root / "known_hosts"
        self.data: dict = {}
        self.reload()

    def reload(self) -> None:
        """Read state.json again (after taking the lock: another command may have changed it)."""
        self.data = {}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise UsageError(f"{self.path} is unreadable ({exc}): fix or delete it") from None
            problem = _shape_problem(data)
            if problem:
                raise UsageError(f"{self.path} is not a deploy state file ({problem}): fix or delete it")
            self.data = data

    def save(self) -> None:
        """Write the whole state (the commands that do hold .deploy/lock). The billing ledger is
        the one part an unlocked command (status, watch) writes too, so it is taken from the
        file as it is now: the freshest ledger is always the one on disk (update_ledger)."""
        with jsonfile.exclusive(self.root / ".state.lock"):
            mine = self.data.get("vast")
            theirs = jsonfile.read(self.path).get("vast") or {}
            if mine and mine.get("instance_id") is not None and theirs.get("instance_id") == mine["instance_id"]:
                _put_ledger(mine, _ledger_of(theirs))
            jsonfile.write_atomic(self.path, self.data)

    def update_ledger(self, instance_id, apply) -> None:
        """Change only the running-time ledger of instance `instance_id`, read from and written to
        the file under its own short lock (not .deploy/lock, which a long command holds for
        minutes while `status` must still answer): `status` and `watch` call this without
        holding .deploy/lock, and must never write back the rest of a state.json they read
        earlier. `apply(ledger)` edits the dict {running_since?, gpu_seconds?} and says whether it did."""
        with jsonfile.exclusive(self.root / ".state.lock"):
            disk = jsonfile.read(self.path)
            theirs = disk.get("vast") or {}
            if theirs.get("instance_id") != instance_id:
                return  # the file holds another instance (or none) by now: nothing of ours to add to
            ledger = _ledger_of(theirs)
            if not apply(ledger):
                return
            _put_ledger(theirs, ledger)
            mine = self.data.get("vast") or {}
            if mine.get("instance_id") == instance_id:
                _put_ledger(mine, ledger)
            jsonfile.write_atomic(self.path, disk)

    # -- the host -------------------------------------------------------------------
    def set_host(self, provider: str, host: Host, workspace: str, facts: dict | None = None) -> None:
        self.data.update(provider=provider, host=host.to_dict(), workspace=workspace,
                         host_facts=facts or {}, host_recorded_at=now_iso())
        self.save()

    def get_host(self) -> Host | None:
        return Host.from_dict(self.data["host"]) if self.data.get("host") else None

    def host_change(self, config: dict) -> tuple[str, str, str] | None:
        """Provider ssh: (configured, recorded, when recorded) when ssh.host/port/user no longer name the
        host `up` recorded, else None. (Vast.ai hosts come from the instance, not from the config.)"""
        rec = self.data.get("host")
        if not rec or self.data.get("provider") != "ssh" or config.get("provider") != "ssh":
            return None
        ssh = config.get("ssh") or {}
        if not ssh.get("host"):
            return None
        configured = f"{ssh.get('user')}@{ssh['host']}:{ssh.get('port', 22)}"
        recorded = f"{rec.get('user')}@{rec['host']}:{rec.get('port', 22)}"
        if configured == recorded:
            return None
        when = self.data.get("host_recorded_at")
        return configured, recorded, f"at {when}" if when else "earlier"

    @property
    def workspace(self) -> str | None:
        return self.data.get("workspace")

    def clear_host(self) -> None:
        for key in ("host", "workspace", "host_facts", "host_recorded_at", "provider"):
            self.data.pop(key, None)
        self.save()

    # -- runs -----------------------------------------------------------------------
    @property
    def runs(self) -> dict:
        return self.data.setdefault("runs", {})

    @property
    def current_run(self) -> str | None:
        return self.data.get("current_run")

    def target_id(self) -> str | None:
        """Which machine the runs live on: a Vast.ai instance (its address changes across a stop/start)
        or an SSH host's address and workspace."""
        vast = self.data.get("vast") or {}
        if self.data.get("provider") == "vast" and vast.get("instance_id") is not None:
            return f"vast instance {vast['instance_id']}"
        h = self.data.get("host")
        return f"{h['user']}@{h['host']}:{h['port']}:{self.workspace}" if h else None

    def check_run_target(self, run: str, local: Path | None = None) -> None:
        """Refuse to mix two different runs that share a name (same --name on another host)."""
        recorded, here = (self.runs.get(run) or {}).get("target"), self.target_id()
        if recorded and here and recorded != here:
            where = f"; its results are in {local}/" if local is not None and local.is_dir() else ""
            raise UsageError(f"run name {run} belongs to a run on {recorded}, not on {here}{where}: pick another "
                             f"--name (or move that folder away and remove the run from {self.path})")

    def record_start(self, run: str, resume: bool = False) -> None:
        self.check_run_target(run)
        info = self.runs.setdefault(run, {"started_at": now_iso(), "fetches": []})
        info.setdefault("target", self.target_id())
        info.pop("given_up_at", None)
        if resume:
            info["resumed_at"] = now_iso()
        info["final_fetch"] = False
        self.data["current_run"] = run
        self.save()

    def record_fetch(self, run: str, files: dict[str, str], final: bool) -> None:
        """`files`: relative path -> verified SHA-256; `final`: the run had ended when fetched."""
        info = self.runs.setdefault(run, {"started_at": None, "fetches": []})
        info.setdefault("target", self.target_id())
        info["fetches"] = (info.get("fetches", []) + [{"at": now_iso(), "files": files, "final": final}])[-20:]
        info["last_fetch_at"] = now_iso()
        info["final_fetch"] = bool(final)
        self.save()

    def results_fetched(self, run: str | None = None) -> bool:
        """True when `run` (default: the current one) was fetched after it ended, or never started.

        A provider that destroys machines (Vast.ai) refuses `down` while this is False.
        """
        run = run or self.current_run
        if run is None or run not in self.runs:
            return True
        return bool(self.runs[run].get("final_fetch") or self.runs[run].get("given_up_at"))

    def unfetched_runs(self) -> list[str]:
        return [r for r in self.runs if not self.results_fetched(r)]

    def give_up(self, runs: list[str]) -> None:
        """`down --force` destroyed these runs' results: later `down`s must not wait for them any more."""
        for run in runs:
            self.runs.setdefault(run, {"started_at": None, "fetches": []})["given_up_at"] = now_iso()
        self.save()


def _shape_problem(data) -> str | None:
    """What makes `data` not a state file (a hand edit, another tool's JSON), or None."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    if not isinstance(data.get("runs", {}), dict):
        return "'runs' is not an object"
    for name, info in data.get("runs", {}).items():
        if not isinstance(info, dict):
            return f"run {name!r} is not an object"
    host = data.get("host")
    if host is not None:
        if not isinstance(host, dict) or not isinstance(host.get("host"), str) or \
                not isinstance(host.get("port", 22), int) or \
                set(host) - {"host", "port", "user", "identity_file", "fallbacks"}:
            return "'host' is not {host, port, user, identity_file, fallbacks}"
    for key in ("current_run", "workspace", "provider"):
        if data.get(key) is not None and not isinstance(data[key], str):
            return f"{key!r} is not a string"
    for key in ("vast", "last_sync", "host_facts"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            return f"{key!r} is not an object"
    return None
