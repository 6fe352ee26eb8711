"""Provider `vast`: rent a GPU instance on Vast.ai through the official `vastai` SDK.

The verbs, cut like SkyPilot's sky/provision/vast/instance.py: find offers, create,
wait until reachable, describe, destroy. Everything after "the host answers SSH" is
deploy/'s shared code. The rules this file keeps:

- Never more than one instance per project: every instance carries a label derived from
  the project folder, and `up` looks for it (the paginated instance list) before renting,
  so a crash between the create request and the state write cannot rent a second one.
- A failed deploy leaves nothing rented: an instance that exits, goes offline or does not
  answer SSH before the timeout is destroyed (its logs kept in .deploy/vast-logs/), and
  the next offer is tried, a bounded number of times.
- The API key comes from VAST_API_KEY or the vastai config file (the SDK resolves it);
  it is never printed, logged, stored in .deploy/ or sent to the instance. The instance
  gets only the watchdog (deploy/watchdog.py), which uses the key Vast.ai gives every
  instance for itself (CONTAINER_API_KEY).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from deploy import cost, vast_offers
from deploy.errors import UsageError
from deploy.providers.base import Host, Provider

# Keys under `vast:` in configs/deploy.yaml, with their defaults. Documented in the README.
VAST_DEFAULTS: dict = {
    "server_url": "https://console.vast.ai",
    "image": None,                  # REGISTRY/IMAGE:TAG built from docker/ (required)
    "disk_gb": 100,
    "gpu_name": "RTX 5000Ada",      # Vast.ai's name for the RTX 5000 Ada Generation
    "gpu_fallbacks": [],            # other models to accept, e.g. ["RTX A6000", "L40S"]
    "num_gpus": 2,
    "min_reliability": 0.98,
    "max_price_per_hour": 2.0,      # $/h for the whole machine, disk included
    "min_inet_down_mbps": 200,      # the dataset goes up this pipe
    "min_cuda": 12.2,               # highest CUDA the host driver supports (cuda_max_good)
    "direct_ports": True,           # direct SSH (faster rsync than the proxy)
    "verified": True,
    "order_by": "price",            # price | dlperf_per_dollar
    "expected_hours": 6.0,          # for the run-cost estimate in the offers table
    "max_hours": 12.0,              # watchdog: stop the instance after this much rental time
    "budget_usd": 30.0,             # watchdog: ... or once this much is spent
    "idle_grace_minutes": 30,       # watchdog: stop once nothing ran or was fetched for this long
    "bid_price": None,              # $/h per machine: rent interruptible at this bid
    "ready_timeout_minutes": 20,    # create -> running -> SSH answers
    "max_attempts": 3,              # offers tried before giving up
    "label": None,                  # default: derived from the project folder
    "env": {},                      # extra environment for the container (no secrets)
    "ssh_user": "root",
    "poll_seconds": 5.0,
    "api_retries": 6,               # 429 answers waited out before giving up
    "watchdog_poll_seconds": 30.0,
}

_TYPES = {
    "server_url": str, "image": (str, type(None)), "disk_gb": (int, float), "gpu_name": str,
    "gpu_fallbacks": list, "num_gpus": int, "min_reliability": (int, float, type(None)),
    "max_price_per_hour": (int, float, type(None)), "min_inet_down_mbps": (int, float, type(None)),
    "min_cuda": (int, float, type(None)), "direct_ports": bool, "verified": bool, "order_by": str,
    "expected_hours": (int, float), "max_hours": (int, float, type(None)), "budget_usd": (int, float, type(None)),
    "idle_grace_minutes": (int, float), "bid_price": (int, float, type(None)),
    "ready_timeout_minutes": (int, float), "max_attempts": int, "label": (str, type(None)), "env": dict,
    "ssh_user": str, "poll_seconds": (int, float), "api_retries": int, "watchdog_poll_seconds": (int, float),
}

FAILED_STATUSES = {"exited", "offline", "unknown"}
WATCHDOG_DIR = ".watchdog"  # under the remote workspace


@dataclass
class VastSettings:
    server_url: str
    image: str | None
    disk_gb: float
    gpu_name: str
    gpu_fallbacks: list
    num_gpus: int
    min_reliability: float | None
    max_price_per_hour: float | None
    min_inet_down_mbps: float | None
    min_cuda: float | None
    direct_ports: bool
    verified: bool
    order_by: str
    expected_hours: float
    max_hours: float | None
    budget_usd: float | None
    idle_grace_minutes: float
    bid_price: float | None
    ready_timeout_minutes: float
    max_attempts: int
    label: str | None
    env: dict
    ssh_user: str
    poll_seconds: float
    api_retries: int
    watchdog_poll_seconds: float

    @classmethod
    def from_config(cls, section: dict | None) -> "VastSettings":
        section = section or {}
        for key, value in section.items():
            if key not in VAST_DEFAULTS:
                raise UsageError(f"unknown key 'vast.{key}' in the deploy config (known: {', '.join(VAST_DEFAULTS)})")
            want = _TYPES[key]
            if value is not None and (not isinstance(value, want) or (isinstance(value, bool) and want is not bool)):
                raise UsageError(f"vast.{key} has the wrong type: got {value!r}")
        s = cls(**{**VAST_DEFAULTS, **section})
        if s.order_by not in ("price", "dlperf_per_dollar"):
            raise UsageError(f"vast.order_by must be price or dlperf_per_dollar, got {s.order_by!r}")
        if s.bid_price is not None and s.max_price_per_hour and s.bid_price > s.max_price_per_hour:
            raise UsageError(f"vast.bid_price {s.bid_price} is above vast.max_price_per_hour {s.max_price_per_hour}")
        for key in ("disk_gb", "num_gpus", "expected_hours", "ready_timeout_minutes", "max_attempts", "poll_seconds"):
            if getattr(s, key) <= 0:
                raise UsageError(f"vast.{key} must be positive")
        for k, v in s.env.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(k)) or not isinstance(v, (str, int, float)):
                raise UsageError(f"vast.env must map NAME: value, got {k!r}: {v!r}")
            if re.search(r"KEY|TOKEN|SECRET|PASSWORD", str(k), re.I):
                raise UsageError(f"vast.env.{k} looks like a secret: secrets never go to the instance")
        return s


class NotReady(Exception):
    """An instance that will not become usable (exited, offline, timed out)."""


class VastProvider(Provider):
    name = "vast"
    retry_auth = True  # a key attached through the API can take a moment to reach the instance

    def __init__(self, config: dict, state):
        super().__init__(config, state)
        self.s = VastSettings.from_config(config.get("vast"))
        self._sdk = None

    # -- the SDK ------------------------------------------------------------------------
    @property
    def sdk(self):
        if self._sdk is None:
            try:
                from vastai import VastAI
            except ImportError:
                raise UsageError("the vastai SDK is not installed: pip install -e '.[deploy]'") from None
            from deploy.http_guard import refuse_plain_http

            refuse_plain_http(self.s.server_url, "the Vast.ai API key", "vast.server_url")
            try:
                # raw/quiet: data back, nothing printed by the SDK (it would never print the key anyway).
                self._sdk = VastAI(server_url=self.s.server_url.rstrip("/"), retry=3, raw=True, quiet=True)
            except RuntimeError:
                raise UsageError("no Vast.ai API key: save it with `vastai set api-key \"$(read -rs k; echo \"$k\")\"` "
                                 "(~/.config/vastai/vast_api_key), or `read -rs VAST_API_KEY && export VAST_API_KEY`"
                                 ) from None
        return self._sdk

    def _call(self, fn, *args, **kwargs):
        """One SDK call, with 429 answers waited out and HTTP failures turned into one-line errors.

        The SDK already retries a 429 a few times; a longer rate limit (a busy account,
        several deploys at once) is waited out here with a growing delay.
        """
        import requests

        delay = 2.0
        for attempt in range(self.s.api_retries + 1):
            try:
                return fn(*args, **kwargs)
            except requests.HTTPError as exc:
                resp = exc.response
                code = resp.status_code if resp is not None else None
                if code == 429 and attempt < self.s.api_retries:
                    try:
                        wait = float(resp.headers.get("Retry-After"))
                    except (TypeError, ValueError):
                        wait = delay
                    print(f"Vast.ai is rate-limiting requests (429); retrying in {wait:.0f}s", file=sys.stderr)
                    time.sleep(wait)
                    delay = min(delay * 2, 60)
                    continue
                if code in (401, 403):
                    raise UsageError("Vast.ai rejected the API key (HTTP %s): check VAST_API_KEY or "
                                     "~/.config/vastai/vast_api_key" % code) from None
                raise
            except requests.ConnectionError:
                raise UsageError(f"cannot reach the Vast.ai API at {self.s.server_url}: check your network "
                                 f"or vast.server_url") from None
        raise AssertionError("unreachable")

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

    # -- offers -----------------------------------------------------------------------
    def _upload_gb(self) -> float:
        path = self.config.get("dataset", {}).get("path")
        if not path or not Path(path).is_dir():
            return 0.0
        return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 1e9

    def _search(self) -> list[dict]:
        offers = vast_offers.search(self._call, self.sdk, self.s)
        if not offers:
            raise UsageError(vast_offers.explain_empty(self._call, self.sdk, self.s))
        return offers

    def offers(self) -> int:
        offers = self._search()
        vast_offers.print_table(offers, self.s, self._upload_gb())
        best = offers[0]
        allowed = cost.hours_allowed(vast_offers.price_per_hour(best, self.s), self.s.max_hours, self.s.budget_usd)
        if allowed is not None:
            print(f"cost guards: the watchdog stops the instance after {allowed:.1f} h of rental at the best offer's "
                  f"price (max_hours {self.s.max_hours}, budget_usd {cost.fmt_usd(self.s.budget_usd)}), "
                  f"and {self.s.idle_grace_minutes:g} min after the run ends unless you fetch")
        return 0

    # -- create -------------------------------------------------------------------------
    def _onstart(self) -> str:
        """Runs as root in /workspace at every container start (Vast.ai's SSH launch mode).

        Vast.ai's own recipe makes the container's variables (CONTAINER_ID, CONTAINER_API_KEY)
        visible to SSH sessions; then the watchdog `up` installed restarts, so an instance
        started again (after a stop or an outbid) is still watched.
        """
        from deploy.remote import q

        ws = self.config.get("remote", {}).get("workspace", "/workspace")
        wd = q(f"{ws.rstrip('/')}/{WATCHDOG_DIR}")
        # The image ships no SSH host keys (one image, many machines): make this container's
        # own if Vast's SSH set-up has not, and make sure sshd runs.
        return ("ssh-keygen -A >/dev/null 2>&1; mkdir -p /run/sshd; pgrep -x sshd >/dev/null || /usr/sbin/sshd; "
                # /etc/environment is world-readable and every SSH session (the training run too) reads
                # it: the instance's variables go there, its key does not (the watchdog, root, reads
                # it from /proc/1/environ)
                "sed -i -E '/^(CONTAINER_ID|CONTAINER_API_KEY|VAST_[A-Z_]+)=/d' /etc/environment; "
                "env | grep -E '^(CONTAINER_ID|VAST_[A-Z_]+)=' | grep -v -E '^[A-Z_]*(KEY|TOKEN|SECRET)[A-Z_]*=' "
                ">> /etc/environment; "
                f"if [ -f {wd}/watchdog.py ]; then "
                f"nohup python3 {wd}/watchdog.py --config {wd}/config.json >> {wd}/watchdog.log 2>&1 & fi")

    def _create_kwargs(self) -> dict:
        if not self.s.image or "REGISTRY/IMAGE" in self.s.image:
            raise UsageError("vast.image is not set: build and push the image (make image push) and put "
                             "REGISTRY/IMAGE:TAG in the deploy config")
        env = {str(k): str(v) for k, v in self.s.env.items()}
        kw = dict(image=self.s.image, disk=float(self.s.disk_gb), env=env, label=self.label,
                  onstart_cmd=self._onstart(), cancel_unavail=True,
                  # ssh + direct -> runtype "ssh_direc ssh_proxy": direct SSH with the proxy as fall-back
                  ssh=True, direct=self.s.direct_ports)
        if self.s.bid_price is not None:
            kw["bid_price"] = float(self.s.bid_price)
        return kw

    def _create(self, offer: dict) -> int | None:
        """Rent `offer`; None when it was taken between search and create (404/410)."""
        import requests

        try:
            r = self._call(self.sdk.create_instance, offer["id"], **self._create_kwargs())
        except requests.HTTPError as exc:
            code = exc.response.status_code if exc.response is not None else None
            if code in (404, 410):
                return None
            raise UsageError(f"Vast.ai refused to create an instance from offer {offer['id']} "
                             f"(HTTP {code}): {_api_message(exc)}") from None
        if not r.get("success", True) or not r.get("new_contract"):
            if r.get("error") in ("no_such_ask", "ask_unavailable"):
                return None
            raise UsageError(f"Vast.ai refused to create an instance from offer {offer['id']}: "
                             f"{r.get('msg') or r.get('error')}")
        return int(r["new_contract"])

    # -- instances ---------------------------------------------------------------------
    def _show(self, iid: int) -> dict | None:
        import requests

        try:
            row = self._call(self.sdk.show_instance, iid)
        except requests.HTTPError as exc:
            if exc.response is not None and exc.response.status_code == 404:
                return None
            raise
        return row or None

    def _labelled(self) -> list[dict]:
        rows = self._call(self.sdk.show_instances)  # the SDK follows next_token over every page
        return [r for r in rows if r.get("label") == self.label]

    def _destroy(self, iid: int, timeout: float = 60) -> bool:
        """Destroy and confirm it is gone; False when it did not exist any more."""
        import requests

        try:
            self._call(self.sdk.destroy_instance, iid)
        except requests.HTTPError as exc:
            if exc.response is not None and exc.response.status_code == 404:
                return False
            raise
        deadline = time.monotonic() + timeout
        while self._show(iid) is not None:
            if time.monotonic() > deadline:
                raise UsageError(f"asked Vast.ai to destroy instance {iid} but it still exists after {timeout:.0f}s: "
                                 f"check https://cloud.vast.ai/instances/ and destroy it there")
            time.sleep(min(self.s.poll_seconds, 2))
        return True

    def _save_logs(self, iid: int, why: str) -> Path | None:
        """Keep a failed instance's logs for the user before it is destroyed."""
        out = Path(self.state.root) / "vast-logs" / f"instance-{iid}.log"
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            text = self._call(self.sdk.logs, iid, tail="1000")
        except Exception as exc:  # logs are a courtesy: never let them block the destroy
            text = f"(could not fetch the instance logs: {type(exc).__name__})"
        out.write_text(f"# instance {iid}: {why}\n{text if isinstance(text, str) else json.dumps(text)}\n")
        return out

    def _addresses(self, row: dict) -> list[tuple[str, int]]:
        """SSH addresses: the direct one (public IP + mapped 22/tcp) first, then the proxy."""
        out = []
        ports = row.get("ports") or {}
        mapped = ports.get("22/tcp") if isinstance(ports, dict) else None
        if row.get("public_ipaddr") and mapped:
            out.append((str(row["public_ipaddr"]).strip(), int(mapped[0]["HostPort"])))
        if row.get("ssh_host") and row.get("ssh_port"):
            out.append((str(row["ssh_host"]).strip(), int(row["ssh_port"])))
        return out

    def _ssh_host(self, addresses: list[tuple[str, int]]) -> Host:
        (h, p), rest = addresses[0], addresses[1:]
        return Host(host=h, port=p, user=self.s.ssh_user, identity_file=str(self._identity_file()),
                    fallbacks=[{"host": fh, "port": fp} for fh, fp in rest])

    def _ssh_answers(self, host: Host) -> Host | None:
        """One SSH attempt per address (pinning the host key on first contact); the one that worked."""
        from deploy.remote import Remote

        try:
            with Remote(host, self.state.known_hosts, connect_timeout=10).connect(
                    retry_for=0, retry_auth=True, quiet=True) as r:
                return r.host
        except UsageError as exc:
            if "CHANGED" in str(exc):
                raise
            return None

    def _wait_ready(self, iid: int, timeout_s: float | None = None) -> Host:
        """Poll until the instance runs and answers SSH, showing status_msg as it changes."""
        timeout_s = timeout_s or self.s.ready_timeout_minutes * 60
        start = time.monotonic()
        last = None
        while True:
            row = self._show(iid)
            if row is None:
                raise NotReady(f"instance {iid} disappeared while starting")
            status, msg = row.get("actual_status"), (row.get("status_msg") or "").strip()
            if (status, msg) != last:
                print(f"instance {iid} [{time.monotonic() - start:4.0f}s]: {status or 'scheduling'}"
                      + (f" - {msg}" if msg else ""), file=sys.stderr)
                last = (status, msg)
            if status in FAILED_STATUSES and not _outbid(row):
                raise NotReady(f"instance {iid} is {status}" + (f": {msg}" if msg else ""))
            if status == "running":
                addresses = self._addresses(row)
                if addresses:
                    answered = self._ssh_answers(self._ssh_host(addresses))
                    if answered is not None:
                        first = (answered.host, answered.port)
                        return self._ssh_host([first] + [a for a in addresses if a != first])
            elapsed = time.monotonic() - start
            if elapsed > timeout_s:
                where = "SSH did not answer" if status == "running" else f"still {status or 'scheduling'}"
                raise NotReady(f"instance {iid}: {where} after {elapsed / 60:.1f} min "
                               f"(vast.ready_timeout_minutes={self.s.ready_timeout_minutes:g})")
            time.sleep(self.s.poll_seconds)

    def _attach_key(self, iid: int) -> None:
        self._call(self.sdk.attach_ssh, iid, self._public_key())

    def _record_host(self, host: Host, row: dict | None = None) -> None:
        facts = {"instance_id": self.vstate.get("instance_id"), "label": self.label,
                 "gpus": self.vstate.get("gpus"), "price_per_hour": self.vstate.get("price_per_hour")}
        self.state.set_host(self.name, host, self.config.get("remote", {}).get("workspace", "/workspace"), facts)

    # -- up ---------------------------------------------------------------------------------
    def up(self, dry_run: bool = False) -> Host | None:
        if dry_run:
            self._dry_run()
            return None
        existing = self._existing()
        if existing is not None:
            return self._reuse(existing)
        self._public_key()  # fail before renting, not after
        offers = self._search()
        tried = 0
        for offer in offers:
            if tried >= self.s.max_attempts:
                break
            tried += 1
            price = vast_offers.price_per_hour(offer, self.s)
            print(f"renting offer {offer['id']}: {offer.get('num_gpus')}x {offer.get('gpu_name')} at "
                  f"{cost.fmt_usd(price)}/h ({self.label})", file=sys.stderr)
            allowed = cost.hours_allowed(price, self.s.max_hours, self.s.budget_usd)
            if allowed is not None and allowed < self.s.expected_hours:
                print(f"warning: the cost guards allow {allowed:.1f} h at this price, less than expected_hours "
                      f"{self.s.expected_hours:g}: the watchdog will stop the instance before a full run "
                      f"(raise vast.budget_usd / vast.max_hours, or train with --resume afterwards)", file=sys.stderr)
            iid = self._create(offer)
            if iid is None:
                print(f"offer {offer['id']} was taken by someone else meanwhile; trying the next one", file=sys.stderr)
                continue
            self._remember(iid, offer, price)
            try:
                self._attach_key(iid)
                host = self._wait_ready(iid)
            except NotReady as exc:
                self._give_up_on(iid, str(exc))
                continue
            except BaseException as exc:  # Ctrl-C or an error while waiting: leave nothing rented
                self._give_up_on(iid, f"interrupted: {type(exc).__name__}")
                raise
            self._record_host(host)
            self._install_watchdog(host)
            print(f"instance {iid} is up: ssh -p {host.port} {host.user}@{host.host}", file=sys.stderr)
            return host
        raise UsageError(f"no instance became ready after {tried} attempt(s); nothing is rented "
                         f"(logs of the failed ones are in {Path(self.state.root) / 'vast-logs'})")

    def _give_up_on(self, iid: int, why: str) -> None:
        logs = self._save_logs(iid, why)
        self._destroy(iid)
        self._forget()
        print(f"{why}; destroyed it (its logs: {logs})", file=sys.stderr)

    def _existing(self) -> dict | None:
        """This project's live instance: the recorded one, else one found by label (after a crash)."""
        iid = self.vstate.get("instance_id")
        if iid is not None:
            row = self._show(int(iid))
            if row is not None:
                return row
            print(f"instance {iid} recorded in .deploy/ no longer exists; forgetting it", file=sys.stderr)
            self._forget()
        rows = self._labelled()
        if not rows:
            return None
        rows.sort(key=lambda r: r.get("start_date") or 0, reverse=True)
        if len(rows) > 1:
            others = ", ".join(str(r["id"]) for r in rows[1:])
            print(f"warning: several instances carry this project's label {self.label}: using {rows[0]['id']}; "
                  f"also rented: {others} (destroy them with `vastai destroy instance ID`)", file=sys.stderr)
        row = rows[0]
        print(f"found instance {row['id']} rented earlier for this project (label {self.label}); reusing it",
              file=sys.stderr)
        self._remember(int(row["id"]), {"id": None, "num_gpus": row.get("num_gpus"), "gpu_name": row.get("gpu_name")},
                       float(row.get("dph_total") or 0.0), row.get("start_date"))
        return row

    def _reuse(self, row: dict) -> Host:
        iid = int(row["id"])
        if _outbid(row):
            raise UsageError(_outbid_message(iid))
        if row.get("intended_status") == "stopped" or row.get("actual_status") in ("exited", "stopped"):
            print(f"instance {iid} is stopped; starting it", file=sys.stderr)
            self._call(self.sdk.start_instance, iid)
        self._attach_key(iid)
        try:
            host = self._wait_ready(iid)
        except NotReady as exc:
            raise UsageError(f"{exc}: the instance is kept (it may hold results); `python -m deploy down --force` "
                             f"destroys it") from None
        self._record_host(host)
        self._install_watchdog(host)
        print(f"instance {iid} is up: ssh -p {host.port} {host.user}@{host.host}", file=sys.stderr)
        return host

    def _dry_run(self) -> None:
        existing = self._existing_without_side_effects()
        if existing is not None:
            print(f"dry run: would reuse instance {existing['id']} ({existing.get('actual_status')}, "
                  f"label {self.label}); nothing new would be rented")
            return
        offers = self._search()
        best = offers[0]
        price = vast_offers.price_per_hour(best, self.s)
        vast_offers.print_table(offers, self.s, self._upload_gb(), limit=5)
        from vastai.api.instances import build_create_instance_payload  # what create_instance would send

        body = build_create_instance_payload(**{k: v for k, v in self._create_kwargs().items()})
        body["env"] = {k: ("***" if re.search(r"KEY|TOKEN|SECRET|PASSWORD", k, re.I) else v)
                       for k, v in body["env"].items()}
        allowed = cost.hours_allowed(price, self.s.max_hours, self.s.budget_usd)
        print(f"dry run: would rent offer {best['id']} ({best.get('num_gpus')}x {best.get('gpu_name')}, "
              f"{cost.fmt_usd(price)}/h incl. {self.s.disk_gb:g} GB disk)")
        print(f"create request: PUT {self.s.server_url.rstrip('/')}/api/v0/asks/{best['id']}/")
        print(json.dumps(body, indent=2, sort_keys=True))
        print("plan: wait for running + SSH (timeout "
              f"{self.s.ready_timeout_minutes:g} min, up to {self.s.max_attempts} offers) -> attach "
              f"{self._identity_file()}.pub -> install the watchdog -> sync -> start training")
        print(f"cost: about {cost.fmt_usd(cost.estimate_run_cost(price, self.s.expected_hours))} for "
              f"{self.s.expected_hours:g} h; the watchdog stops it after "
              f"{'-' if allowed is None else f'{allowed:.1f}'} h (max_hours {self.s.max_hours}, budget "
              f"{cost.fmt_usd(self.s.budget_usd)}) or {self.s.idle_grace_minutes:g} min idle")
        print("dry run: nothing was rented")

    def _existing_without_side_effects(self) -> dict | None:
        iid = self.vstate.get("instance_id")
        if iid is not None and (row := self._show(int(iid))) is not None:
            return row
        rows = self._labelled()
        return rows[0] if rows else None

    # -- the other verbs ------------------------------------------------------------------
    def host(self) -> Host:
        host = self.state.get_host()
        if host is None or self.state.data.get("provider") != self.name or "instance_id" not in self.vstate:
            raise UsageError("no Vast.ai instance recorded: run `python -m deploy up` (or `make deploy`) first")
        return host

    def ensure_running(self) -> None:
        """Before sync/fetch: start an instance the watchdog stopped; report an outbid one."""
        iid = self.vstate.get("instance_id")
        if iid is None:
            raise UsageError("no Vast.ai instance recorded: run `python -m deploy up` first")
        row = self._show(int(iid))
        if row is None:
            self._forget()
            raise UsageError(f"instance {iid} no longer exists on Vast.ai (destroyed, or expired); "
                             f"forgot it: run `python -m deploy up` to rent a new one")
        if _outbid(row):
            raise UsageError(_outbid_message(int(iid)))
        if row.get("actual_status") == "running" and row.get("intended_status") != "stopped":
            self._touch_activity()
            return
        print(f"instance {iid} is stopped (by the watchdog or by you); starting it again - it bills by the hour "
              f"until stopped: run `python -m deploy down` once your results are fetched", file=sys.stderr)
        self._call(self.sdk.start_instance, int(iid))
        try:
            host = self._wait_ready(int(iid))
        except NotReady as exc:
            raise UsageError(f"{exc}: could not start instance {iid} again") from None
        self._record_host(host)  # addresses change across a stop/start
        self._install_watchdog(host)
        self._touch_activity()

    def describe(self) -> dict:
        iid = self.vstate.get("instance_id")
        if iid is None:
            return {"provider": "vast", "instance": "none rented"}
        row = self._show(int(iid))
        if row is None:
            return {"provider": "vast", "instance": f"{iid} (no longer exists: run `python -m deploy down`)"}
        price = float(row.get("dph_total") or self.vstate.get("price_per_hour") or 0.0)
        hours = max(0.0, time.time() - float(row.get("start_date") or time.time())) / 3600
        money = cost.spending(price, hours, self.s.max_hours, self.s.budget_usd, self.s.expected_hours)
        status = row.get("actual_status") or "scheduling"
        if _outbid(row):
            status = "outbid (stopped until the bid wins again)"
        elif row.get("intended_status") == "stopped":
            status = "stopped (disk kept, GPU not billed)"
        return {
            "reachable": row.get("actual_status") == "running" and row.get("intended_status") != "stopped",
            "provider": "vast",
            "instance": iid,
            "label": self.label,
            "status": status,
            "status_msg": (row.get("status_msg") or "").strip(),
            "gpus": f"{row.get('num_gpus')}x {row.get('gpu_name')}",
            "price_per_hour": cost.fmt_usd(money["price_per_hour"]),
            "time_rented": _fmt_hours(money["hours_rented"]),
            "spent": cost.fmt_usd(money["spent_usd"]),
            "projected_total": cost.fmt_usd(money["projected_usd"]),
            "guards": (f"max_hours {self.s.max_hours}, budget {cost.fmt_usd(self.s.budget_usd)}, "
                       f"idle grace {self.s.idle_grace_minutes:g} min"
                       + ("" if money["hours_allowed"] is None else
                          f" -> watchdog stops it at {_fmt_hours(money['hours_allowed'])}")),
        }

    def remote_env(self) -> dict:
        # The watchdog is installed by `up` and restarted by the container's onstart; the run
        # itself needs only to know where it runs (no key of any kind goes here).
        return {"DEPLOY_PROVIDER": "vast", "VAST_INSTANCE_LABEL": self.label}

    def down(self, force: bool = False) -> None:
        iid = self.vstate.get("instance_id")
        if iid is None:
            rows = self._labelled()
            if not rows:
                print("nothing is rented for this project")
                self._forget()
                return
            iid = rows[0]["id"]
        unfetched = self.state.unfetched_runs()
        if unfetched and not force:
            raise UsageError(f"run {', '.join(unfetched)} has not been fetched since it ended: `python -m deploy fetch` "
                             f"first, or `python -m deploy down --force` to destroy instance {iid} and its results")
        host = self.state.get_host()
        if self._destroy(int(iid)):
            print(f"destroyed instance {iid}; confirmed gone: nothing is rented for this project any more")
        else:
            print(f"instance {iid} no longer exists on Vast.ai (destroyed elsewhere or expired); cleaned .deploy/")
        if unfetched:  # forced: those results are gone, so they must not block every later `down`
            self.state.give_up(unfetched)
            print(f"gave up the unfetched results of run(s) {', '.join(unfetched)} (recorded in .deploy/)")
        leftovers = [r["id"] for r in self._labelled()]
        for other in leftovers:  # a second instance from an earlier crash: also ours, also billing
            self._destroy(int(other))
            print(f"also destroyed instance {other} (same project label)")
        if host is not None:
            _unpin(self.state.known_hosts, host)
        self._forget()

    # -- the on-instance watchdog ----------------------------------------------------------
    def _watchdog_config(self) -> dict:
        return {
            "instance_id": self.vstate.get("instance_id"),
            "server_url": self.s.server_url.rstrip("/"),
            "price_per_hour": self.vstate.get("price_per_hour") or 0.0,
            "rented_since": self.vstate.get("created_at") or time.time(),
            "max_hours": self.s.max_hours,
            "budget_usd": self.s.budget_usd,
            "idle_grace_minutes": self.s.idle_grace_minutes,
            "workspace": self.config.get("remote", {}).get("workspace", "/workspace"),
            "auto_resume": self.s.bid_price is not None,  # an outbid run continues when the bid wins again
            "poll_seconds": self.s.watchdog_poll_seconds,
        }

    def _install_watchdog(self, host: Host) -> None:
        """Copy deploy/watchdog.py to the instance and (re)start it detached.

        It is one self-contained file: deploy/ is not synced to the instance, only trainer/.
        """
        from deploy.remote import Remote, q, rpath

        ws = self.config.get("remote", {}).get("workspace", "/workspace")
        wd = f"{ws.rstrip('/')}/{WATCHDOG_DIR}"
        here = Path(__file__).resolve().parent.parent
        source = (here / "watchdog.py").read_text()
        py = self.config.get("remote", {}).get("python") or "python3"
        if py == "auto-venv":
            py = "python3"
        with Remote(host, self.state.known_hosts).connect(retry_for=30, retry_auth=True, quiet=True) as r:
            for name, text in (("runstate.py", (here / "runstate.py").read_text()),  # the run-alive rule it shares
                               ("watchdog.py", source), ("config.json", json.dumps(self._watchdog_config(), indent=2))):
                # stream(): a raw channel that sends EOF after stdin, for files of any size
                out: list[bytes] = []
                code = r.stream(f"mkdir -p {rpath(wd)} && cat > {rpath(wd)}/{name}.tmp && "
                                f"mv {rpath(wd)}/{name}.tmp {rpath(wd)}/{name}", out.append, stdin=text.encode())
                if code != 0:
                    raise UsageError(f"installing the watchdog on {host.host} failed: "
                                     f"{b''.join(out).decode(errors='replace').strip() or 'connection lost'}")
            # Start it, then wait (up to 15 s) for its first word: a watchdog that cannot work
            # (no instance key, no vastai in the image) must be reported now, not discovered on the bill.
            said = r.check(
                f"cd {rpath(wd)} && {{ [ -f watchdog.pid ] && kill $(cat watchdog.pid) 2>/dev/null; true; }} && "
                f"size=$(wc -c < watchdog.log 2>/dev/null || echo 0) && "
                f"{{ nohup setsid {q(py)} watchdog.py --config config.json >> watchdog.log 2>&1 < /dev/null & }}; "
                f"i=0; while [ $i -lt 150 ]; do new=$(tail -c +$((size + 1)) watchdog.log 2>/dev/null); "
                f"case \"$new\" in *'watching instance'*) echo OK; exit 0;; *exiting*) printf '%s\\n' \"$new\" | tail -n 1; "
                f"exit 0;; esac; sleep 0.1; i=$((i + 1)); done; echo 'no word from the watchdog after 15 s'",
                "starting the watchdog").strip()
        if said != "OK":
            print(f"warning: the cost watchdog is not running on the instance ({said.split('watchdog: ', 1)[-1]}); "
                  f"see {wd}/watchdog.log there", file=sys.stderr)

    def _touch_activity(self) -> None:
        """Tell the watchdog someone is using the instance (sync/fetch): its idle clock restarts."""
        from deploy.remote import Remote, rpath

        host = self.state.get_host()
        if host is None:
            return
        ws = self.config.get("remote", {}).get("workspace", "/workspace")
        try:
            with Remote(host, self.state.known_hosts).connect(retry_for=10, quiet=True) as r:
                r.run(f"mkdir -p {rpath(ws + '/' + WATCHDOG_DIR)} && touch {rpath(ws + '/' + WATCHDOG_DIR)}/activity")
        except UsageError:
            pass  # the command that follows reports an unreachable host itself


def _outbid(row: dict) -> bool:
    """An interruptible instance stopped by the market, not by anyone's request."""
    return bool(row.get("is_bid")) and row.get("intended_status") == "running" and \
        row.get("actual_status") in ("exited", "stopped") and row.get("cur_state") == "stopped"


def _outbid_message(iid: int) -> str:
    return (f"instance {iid} was outbid (interruptible rental): it is stopped until your bid is the highest "
            f"again. Raise vast.bid_price, or wait; once it runs again, `python -m deploy start --resume` "
            f"continues training from the last checkpoint")


def _api_message(exc) -> str:
    try:
        body = exc.response.json()
        return body.get("msg") or body.get("error") or str(body)
    except Exception:
        return str(exc)


def _fmt_hours(h: float) -> str:
    return f"{int(h)}h {int(h * 60) % 60:02d}m"


def _unpin(known_hosts: Path, host: Host) -> None:
    """Forget a destroyed instance's host keys: its address may serve another machine next time."""
    import paramiko

    from deploy.remote import known_hosts_name

    if not Path(known_hosts).is_file():
        return
    keys = paramiko.HostKeys(str(known_hosts))
    names = [known_hosts_name(host)] + [known_hosts_name(Host(fb["host"], int(fb["port"]))) for fb in host.fallbacks]
    changed = False
    for name in names:
        if name in keys:
            del keys[name]
            changed = True
    if changed:
        keys.save(str(known_hosts))
