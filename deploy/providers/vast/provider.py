"""Provider `vast`: rent a GPU instance on Vast.ai through the official `vastai` SDK.

The verbs, cut like SkyPilot's sky/provision/vast/instance.py: find offers, create,
wait until reachable, describe, destroy. Everything after "the host answers SSH" is
deploy/'s shared code. VastProvider is put together here from one class per stage of the
rental life cycle (this package's __init__.py lists every module):

    up.py (offers, up) -> create.py (one create request) -> wait.py (running and SSH) ->
    watchdog_setup.py -> running.py (describe, start again, bid) -> down.py (destroy)

This file keeps what every stage shares: the settings and the API, which instance is
this project's (its label, what .deploy/ remembers of it), and the instance calls.

The rules the provider keeps:

- Never more than one instance per project: every instance carries a label derived from
  the project folder, and `up` looks for it (the paginated instance list) before renting,
  so a crash between the create request and the state write cannot rent a second one.
- A failed deploy leaves nothing rented: an instance that exits, goes offline, fails with a
  fatal status_msg or does not answer SSH before the timeout is destroyed (its logs kept in
  .deploy/vast-logs/), so is one a failed create made anyway (`new_contract`), and one whose
  real price turns out above max_price_per_hour; then the next offer is tried, a bounded
  number of times.
- The API key comes from VAST_API_KEY or the vastai config file (the SDK resolves it);
  it is never printed, logged, stored in .deploy/ or sent to the instance. The instance
  gets only the watchdog (deploy/host/shipped/watchdog.py), which uses the key Vast.ai gives
  every instance for itself (CONTAINER_API_KEY).
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

from deploy.errors import UsageError
from deploy.providers.base import Host, Provider
from deploy.providers.vast.api import VastApi
from deploy.providers.vast.create import Create
from deploy.providers.vast.down import Down
from deploy.providers.vast.running import Running
from deploy.providers.vast.settings import VastSettings
from deploy.providers.vast.up import Up
from deploy.providers.vast.wait import WaitUntilReady
from deploy.providers.vast.watchdog_setup import WatchdogSetup


class VastProvider(Up, Create, WaitUntilReady, WatchdogSetup, Running, Down, Provider):
    name = "vast"
    retry_auth = True  # a key attached through the API can take a moment to reach the instance

    def __init__(self, config: dict, state):
        super().__init__(config, state)
        self.s = VastSettings.from_config(config.get("vast"))
        self.api = VastApi(self.s)

    # kept for offers.search(call, sdk, s), which takes the caller and the SDK
    @property
    def sdk(self):
        return self.api.sdk

    def _call(self, fn, *args, **kwargs):
        return self.api.call(fn, *args, **kwargs)

    # -- identity of this project's instance ---------------------------------------------
    @property
    def project_dir(self) -> Path:
        return Path(self.state.root).absolute().parent

    @property
    def label(self) -> str:
        """Unique per project folder and stable across runs: how `up` finds what it rented."""
        if self.s.label:
            return self.s.label
        name = re.sub(r"[^a-z0-9]+", "-", self.project_dir.name.lower()).strip("-")[:24] or "project"
        digest = hashlib.sha256(str(self.project_dir).encode()).hexdigest()[:8]
        return f"vtrain-{name}-{digest}"

    @property
    def vstate(self) -> dict:
        return self.state.data.setdefault("vast", {})

    def _remember(self, instance_id: int, offer: dict, price: float, created_at: float | None = None) -> None:
        self.vstate.update(instance_id=instance_id, label=self.label, offer_id=offer.get("id"),
                           price_per_hour=price, gpus=f"{offer.get('num_gpus')}x {offer.get('gpu_name')}",
                           interruptible=self.s.bid_price is not None, created_at=created_at or time.time())
        self.state.save()

    def _forget(self) -> None:
        self.state.data.pop("vast", None)
        if self.state.data.get("provider") == self.name:
            self.state.clear_host()
        else:
            self.state.save()

    def _identity_file(self) -> Path:
        f = self.config.get("ssh", {}).get("identity_file") or "~/.ssh/id_ed25519"
        return Path(f).expanduser()

    def _public_key(self) -> str:
        pub = Path(str(self._identity_file()) + ".pub")
        if not pub.is_file():
            raise UsageError(f"no SSH public key at {pub}: create one with `ssh-keygen -t ed25519` "
                             f"or set ssh.identity_file to your private key")
        return pub.read_text().strip()

    # -- instances ---------------------------------------------------------------------
    def _show(self, iid: int) -> dict | None:
        return self.api.show(iid)

    def _labelled(self) -> list[dict]:
        return self.api.labelled(self.label)

    def _destroy(self, iid: int, timeout: float = 60) -> bool:
        return self.api.destroy(iid, timeout)

    def _save_logs(self, iid: int, why: str) -> Path | None:
        """Keep a failed instance's logs for the user before it is destroyed."""
        out = Path(self.state.root) / "vast-logs" / f"instance-{iid}.log"
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            text = self.api.logs(iid)
        except Exception as exc:  # logs are a courtesy: never let them block the destroy
            text = f"(could not fetch the instance logs: {type(exc).__name__})"
        out.write_text(f"# instance {iid}: {why}\n{text}\n")
        return out

    def _attach_key(self, iid: int) -> None:
        self.api.attach_key(iid, self._public_key())

    def _record_host(self, host: Host, row: dict | None = None) -> None:
        facts = {"instance_id": self.vstate.get("instance_id"), "label": self.label,
                 "gpus": self.vstate.get("gpus"), "price_per_hour": self.vstate.get("price_per_hour")}
        self.state.set_host(self.name, host, self.config.get("remote", {}).get("workspace", "/workspace"), facts)

    # -- the recorded host ------------------------------------------------------------------
    def host(self) -> Host:
        host = self.state.get_host()
        if host is None or self.state.data.get("provider") != self.name or "instance_id" not in self.vstate:
            raise UsageError("no Vast.ai instance recorded: run `python -m deploy up` (or `make deploy`) first")
        return host

    def remote_env(self) -> dict:
        # The watchdog is installed by `up` and restarted by the container's onstart; the run
        # itself needs only to know where it runs (no key of any kind goes here).
        return {"DEPLOY_PROVIDER": "vast", "VAST_INSTANCE_LABEL": self.label}
