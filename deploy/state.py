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
import tempfile
import time
from pathlib import Path

from deploy.errors import UsageError
from deploy.providers.base import Host


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class State:
    def __init__(self, root: str | os.PathLike = ".deploy"):
        self.root = Path(root)
        self.path = self.root / "state.json"
        self.known_hosts = self.root / "known_hosts"
        self.data: dict = {}
        if self.path.is_file():
            try:
                self.data = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise UsageError(f"{self.path} is unreadable ({exc}): fix or delete it") from None

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".state.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(self.data, fh, indent=2, sort_keys=True)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # -- the host -------------------------------------------------------------------
    def set_host(self, provider: str, host: Host, workspace: str, facts: dict | None = None) -> None:
        self.data.update(provider=provider, host=host.to_dict(), workspace=workspace,
                         host_facts=facts or {}, host_recorded_at=now_iso())
        self.save()

    def get_host(self) -> Host | None:
        return Host.from_dict(self.data["host"]) if self.data.get("host") else None

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

    def record_start(self, run: str, resume: bool = False) -> None:
        info = self.runs.setdefault(run, {"started_at": now_iso(), "fetches": []})
        if resume:
            info["resumed_at"] = now_iso()
        info["final_fetch"] = False
        self.data["current_run"] = run
        self.save()

    def record_fetch(self, run: str, files: dict[str, str], final: bool) -> None:
        """`files`: relative path -> verified SHA-256; `final`: the run had ended when fetched."""
        info = self.runs.setdefault(run, {"started_at": None, "fetches": []})
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
        return bool(self.runs[run].get("final_fetch"))

    def unfetched_runs(self) -> list[str]:
        return [r for r in self.runs if not self.results_fetched(r)]
