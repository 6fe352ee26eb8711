"""Provider `vast`: rent a GPU instance on Vast.ai through the official `vastai` SDK.

The verbs, cut like SkyPilot's sky/provision/vast/instance.py: find offers, create,
wait until reachable, describe, destroy. Everything after "the host answers SSH" is
deploy/'s shared code. This file is the rental life cycle; its helpers each do one job:

- settings.py       the `vast:` config keys
- api.py            the SDK, rate limits, one-line errors, what a create really did
- rows.py           what an instance row means (coming up, dead, stopped, outbid, addresses)
- image.py          the image reference and the private-registry login
- wait.py           waiting until it runs and answers SSH (fresh or restarted); the billing ledger
- watchdog_setup.py  putting the cost watchdog on the instance

The rules this file keeps:

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
  gets only the watchdog (deploy/host/shipped/watchdog.py), which uses the key Vast.ai gives every
  instance for itself (CONTAINER_API_KEY).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from pathlib import Path

from deploy.errors import UsageError
from deploy.plan import inputs, job_model, report
from deploy.providers.base import Host, Provider
from deploy.providers.vast import billing, image, offers, registry, rows
from deploy.providers.vast.api import VastApi
from deploy.providers.vast.settings import VastSettings
from deploy.providers.vast.wait import NotReady, WaitUntilReady
from deploy.providers.vast.watchdog_setup import WATCHDOG_DIR, WatchdogSetup


class VastProvider(WaitUntilReady, WatchdogSetup, Provider):
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

    # -- offers -----------------------------------------------------------------------
    def _job(self):
        """The job model's inputs for this project (deploy/plan/job_model.py), looked up once per command."""
        if getattr(self, "_job_cache", None) is None:
            self._job_cache = inputs.job_from_config(self.config, report.measured(self.state.root))
        return self._job_cache

    def _search(self) -> list[tuple[dict, dict]]:
        """(offer, whole-job estimate) pairs that pass every filter, in vast.order_by order."""
        found = offers.search(self._call, self.sdk, self.s)
        if not found:
            raise UsageError(offers.explain_empty(self._call, self.sdk, self.s))
        return offers.ranked(found, self.s, self._job())

    def offers(self, as_json: bool = False) -> int:
        pairs = self._search()
        if as_json:
            print(json.dumps(offers.as_json(pairs), indent=2))
            return 0
        offers.print_table(pairs, self.s, self._job())
        best = pairs[0][0]
        allowed = billing.hours_allowed(offers.price_per_hour(best, self.s), self.s.max_hours, self.s.budget_usd)
        if allowed is not None:
            print(f"cost guards: the watchdog stops the instance after {allowed:.1f} h of rental at the best offer's "
                  f"price (max_hours {self.s.max_hours}, budget_usd {billing.fmt_usd(self.s.budget_usd)}), "
                  f"and {self.s.idle_grace_minutes:g} min after the run ends unless you fetch")
        return 0

    # -- create -------------------------------------------------------------------------
    def _onstart(self) -> str:
        """Runs as root in /workspace at every container start (Vast.ai's SSH launch mode).

        Vast.ai's own recipe makes the container's variables (CONTAINER_ID, CONTAINER_API_KEY)
        visible to SSH sessions; then the watchdog `up` installed restarts, so an instance
        started again (after a stop or an outbid) is still watched.
        """
        from deploy.host.remote import q

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
                f"if [ -f {wd}/watchdog.py ]; then {self._watchdog_python_sh()}; [ -n \"$wpy\" ] && "
                f"nohup \"$wpy\" {wd}/watchdog.py --config {wd}/config.json >> {wd}/watchdog.log 2>&1 & fi")

    def _create_kwargs(self, with_secrets: bool = True) -> dict:
        image.parse(self.s.image)  # one line for a missing or malformed reference
        env = {str(k): str(v) for k, v in self.s.env.items()}
        # cancel_unavail: "Defaults to false for interruptibles. Defaults to true for on-demand with
        # target_state='running'" (create_instance.yaml:96-98): asked for on-demand only. The SDK sends the
        # field on every create (vastai/api/instances.py), so an interruptible create says false.
        kw = dict(image=self.s.image, disk=float(self.s.disk_gb), env=env, label=self.label,
                  onstart_cmd=self._onstart(), cancel_unavail=self.s.bid_price is None,
                  # ssh + direct -> runtype "ssh_direc ssh_proxy": direct SSH with the proxy as fall-back
                  ssh=True, direct=self.s.direct_ports)
        if self.s.bid_price is not None:
            kw["bid_price"] = float(self.s.bid_price)
        if self.s.image_login:
            kw["login"] = (image.login_arg(self.s.image, self.s.image_login) if with_secrets else
                           f"-u {self.s.image_login['username']} -p ${self.s.image_login['password_env']} "
                           f"{image.parse(self.s.image)[0]}")
        return kw

    def _create(self, offer: dict) -> int | None:
        """Rent `offer`: its instance id, or None to try the next offer (taken, price moved).

        Whatever the answer, an instance a failed create made anyway is destroyed first.
        """
        r = self.api.create(offer["id"], self._create_kwargs())
        if r.leftover is not None:
            print(f"the failed create of offer {offer['id']} still made instance {r.leftover} "
                  f"({r.message}); destroying it", file=sys.stderr)
            self.api.destroy(int(r.leftover))
        if r.outcome == "ok":
            return r.instance_id
        if r.outcome == "taken":
            print(f"offer {offer['id']} was taken by someone else meanwhile; trying the next one", file=sys.stderr)
            return None
        if r.outcome == "invalid_price":
            print(f"offer {offer['id']}: Vast.ai refused the price ({r.message}); trying the next one",
                  file=sys.stderr)
            return None
        if r.outcome == "refused":  # about this offer (dstack and SkyPilot move on the same way)
            print(f"offer {offer['id']}: Vast.ai refused the create ({r.message}); trying the next one",
                  file=sys.stderr)
            return None
        raise UsageError(f"Vast.ai refused to create an instance for this account ({r.message}): no other offer "
                         f"would change that; nothing is rented")

    def _real_price_ok(self, iid: int, offer: dict) -> float | None:
        """The instance's own dph_total; None (after destroying it) when above max_price_per_hour.

        Offers can change between the search and the create: the row of what was rented is
        the price that will be billed.
        """
        row = self.api.show(iid) or {}
        quoted = offers.price_per_hour(offer, self.s)
        price = float(row.get("dph_total") or quoted)
        cap = self.s.max_price_per_hour
        if self.s.bid_price is None and cap and price > cap + 1e-9:
            print(f"instance {iid} from offer {offer['id']} bills {billing.fmt_usd(price)}/h, above "
                  f"vast.max_price_per_hour {billing.fmt_usd(cap)} (the search said {billing.fmt_usd(quoted)}/h); "
                  f"destroying it and trying the next offer", file=sys.stderr)
            self.api.destroy(iid)
            self._forget()
            return None
        return price

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

    # -- up ---------------------------------------------------------------------------------
    def up(self, dry_run: bool = False) -> Host | None:
        if dry_run:
            self._dry_run()
            return None
        existing = self._existing()
        if existing is not None:
            return self._reuse(existing)
        self._public_key()  # fail before renting, not after
        self._create_kwargs()  # image reference and registry login: fail before renting too
        registry.require(self.s.image, self.s.image_login)  # a tag that does not exist fails on every offer
        pairs = self._search()
        tried = 0
        started = time.time()
        for offer, est in pairs:
            if tried >= self.s.max_attempts:
                break
            tried += 1
            price = offers.price_per_hour(offer, self.s)
            print(f"renting offer {offer['id']}: {offer.get('num_gpus')}x {offer.get('gpu_name')} at "
                  f"{billing.fmt_usd(price)}/h ({self.label})", file=sys.stderr)
            allowed = billing.hours_allowed(price, self.s.max_hours, self.s.budget_usd)
            if allowed is not None and allowed < self.s.expected_hours:
                print(f"warning: the cost guards allow {allowed:.1f} h at this price, less than expected_hours "
                      f"{self.s.expected_hours:g}: the watchdog will stop the instance before a full run "
                      f"(raise vast.budget_usd / vast.max_hours, or train with --resume afterwards)", file=sys.stderr)
            if allowed is not None and allowed < est["job_hours"]:
                print(f"warning: the job model estimates {job_model.fmt_minutes(est['job_hours'])} for this job, more than "
                      f"the {allowed:.1f} h the cost guards allow at this price", file=sys.stderr)
            iid = self._create(offer)
            if iid is None:
                continue
            self._remember(iid, offer, price)
            try:
                real = self._real_price_ok(iid, offer)
                if real is None:
                    continue
                if real != price:
                    self._remember(iid, offer, real, self.vstate.get("created_at"))
                self._attach_key(iid)
                host = self._wait_ready(iid)
            except NotReady as exc:
                self._give_up_on(iid, str(exc))
                continue
            except BaseException as exc:  # Ctrl-C or an error while waiting: leave nothing rented
                self._give_up_on(iid, f"interrupted: {type(exc).__name__}")
                raise
            self._record_host(host)
            report.remember_estimate(self.state.root, est, inputs.describe_inputs(self._job()),
                                          self._job().corrections)
            report.update(self.state.root, up={"started_at": started, "ended_at": time.time()})
            self._install_watchdog(host)
            print(f"instance {iid} is up: ssh -p {host.port} {host.user}@{host.host}", file=sys.stderr)
            print(f"estimate: {billing.fmt_usd(est['job_cost_usd'])}, {job_model.fmt_minutes(est['job_hours'])} "
                  f"({job_model.breakdown(est)}; {job_model.bound(est)})", file=sys.stderr)
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
        labelled = self._labelled()
        if not labelled:
            return None
        labelled.sort(key=lambda r: r.get("start_date") or 0, reverse=True)
        if len(labelled) > 1:
            others = ", ".join(str(r["id"]) for r in labelled[1:])
            print(f"warning: several instances carry this project's label {self.label}: using {labelled[0]['id']}; "
                  f"also rented: {others} (destroy them with `vastai destroy instance ID`)", file=sys.stderr)
        row = labelled[0]
        print(f"found instance {row['id']} rented earlier for this project (label {self.label}); reusing it",
              file=sys.stderr)
        self._remember(int(row["id"]), {"id": None, "num_gpus": row.get("num_gpus"), "gpu_name": row.get("gpu_name")},
                       float(row.get("dph_total") or 0.0), row.get("start_date"))
        return row

    def _reuse(self, row: dict) -> Host:
        iid = int(row["id"])
        if not rows.is_running(row):
            print(f"instance {iid} is {row.get('actual_status') or 'not running'}; starting it", file=sys.stderr)
        self._attach_key(iid)
        try:
            host = self._start_again(iid, row)
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
        try:
            registry.require(self.s.image, self.s.image_login)
        except UsageError as exc:
            print(f"dry run: `up` would refuse: {exc}")
            return
        pairs = self._search()
        best, est = pairs[0]
        price = offers.price_per_hour(best, self.s)
        offers.print_table(pairs, self.s, self._job(), limit=5, detail=1)
        from vastai.api.instances import build_create_instance_payload  # what create_instance would send

        body = build_create_instance_payload(**self._create_kwargs(with_secrets=False))
        body["env"] = {k: ("***" if re.search(r"KEY|TOKEN|SECRET|PASSWORD", k, re.I) else v)
                       for k, v in body["env"].items()}
        allowed = billing.hours_allowed(price, self.s.max_hours, self.s.budget_usd)
        print(f"dry run: would rent offer {best['id']} ({best.get('num_gpus')}x {best.get('gpu_name')}, "
              f"{billing.fmt_usd(price)}/h incl. {self.s.disk_gb:g} GB disk)")
        print(f"create request: PUT {self.s.server_url.rstrip('/')}/api/v0/asks/{best['id']}/")
        print(json.dumps(body, indent=2, sort_keys=True))
        print("plan: wait for running + SSH (timeout "
              f"{self.s.ready_timeout_minutes:g} min, up to {self.s.max_attempts} offers) -> attach "
              f"{self._identity_file()}.pub -> install the watchdog -> sync -> start training")
        print(f"estimate: {billing.fmt_usd(est['job_cost_usd'])} for the whole job, {job_model.fmt_minutes(est['job_hours'])} "
              f"({job_model.breakdown(est)}; {job_model.bound(est)}); the watchdog stops it after "
              f"{'-' if allowed is None else f'{allowed:.1f}'} h (max_hours {self.s.max_hours}, budget "
              f"{billing.fmt_usd(self.s.budget_usd)}) or {self.s.idle_grace_minutes:g} min idle")
        print("dry run: nothing was rented")

    def _existing_without_side_effects(self) -> dict | None:
        iid = self.vstate.get("instance_id")
        if iid is not None and (row := self._show(int(iid))) is not None:
            return row
        labelled = self._labelled()
        return labelled[0] if labelled else None

    # -- the other verbs ------------------------------------------------------------------
    def host(self) -> Host:
        host = self.state.get_host()
        if host is None or self.state.data.get("provider") != self.name or "instance_id" not in self.vstate:
            raise UsageError("no Vast.ai instance recorded: run `python -m deploy up` (or `make deploy`) first")
        return host

    def ensure_running(self) -> None:
        """Before sync/fetch: start an instance the watchdog stopped (waiting through its restart lag)."""
        iid = self.vstate.get("instance_id")
        if iid is None:
            raise UsageError("no Vast.ai instance recorded: run `python -m deploy up` first")
        row = self._show(int(iid))
        if row is None:
            self._forget()
            raise UsageError(f"instance {iid} no longer exists on Vast.ai (destroyed, or expired); "
                             f"forgot it: run `python -m deploy up` to rent a new one")
        self._observe(row)
        if rows.is_running(row):
            self._touch_activity()
            return
        print(f"instance {iid} is stopped (by the watchdog, by you, or outbid); starting it again - it bills by "
              f"the hour until stopped: run `python -m deploy down` once your results are fetched", file=sys.stderr)
        try:
            host = self._start_again(int(iid), row)
        except NotReady as exc:
            raise UsageError(f"{exc}: could not start instance {iid} again") from None
        self._record_host(host)  # addresses change across a stop/start
        self._install_watchdog(host)
        self._touch_activity()

    def bid(self, price: float) -> None:
        """Raise (or lower) an interruptible instance's bid: PUT /instances/bid_price/{id}/ (change_bid.yaml)."""
        iid = self.vstate.get("instance_id")
        if iid is None:
            raise UsageError("no Vast.ai instance recorded: run `python -m deploy up` first")
        row = self._show(int(iid))
        if row is None:
            raise UsageError(f"instance {iid} no longer exists on Vast.ai: run `python -m deploy up`")
        if not row.get("is_bid"):
            raise UsageError(f"instance {iid} is on-demand, not interruptible: it has no bid to change")
        # change_bid.yaml x-input-validation: 0.001 <= price <= 32 * number of GPUs
        top = 32.0 * int(row.get("num_gpus") or 1)
        if not 0.001 <= price <= top:
            raise UsageError(f"a bid must be between $0.001 and ${top:g}/h for this machine, got {price:g}")
        if self.s.max_price_per_hour and price > self.s.max_price_per_hour:
            raise UsageError(f"a bid of {billing.fmt_usd(price)}/h is above vast.max_price_per_hour "
                             f"{billing.fmt_usd(self.s.max_price_per_hour)}: raise that first if you mean it")
        self.api.change_bid(int(iid), price)
        _, disk = rows.hourly_parts(row)
        self.vstate.update(bid_price=price, price_per_hour=round(price + disk, 6))
        self.state.save()
        print(f"bid for instance {iid} is now {billing.fmt_usd(price)}/h (+ {billing.fmt_usd(disk)}/h disk); it runs "
              f"again once that is the highest bid for the machine - `python -m deploy fetch` or `sync` waits for it")

    def describe(self) -> dict:
        iid = self.vstate.get("instance_id")
        if iid is None:
            return {"provider": "vast", "instance": "none rented"}
        row = self._show(int(iid))
        if row is None:
            return {"provider": "vast", "instance": f"{iid} (no longer exists: run `python -m deploy down`)"}
        self._observe(row)
        gpu_rate, disk_rate = rows.hourly_parts(row, self.vstate.get("price_per_hour") or 0.0)
        exists_h = max(0.0, time.time() - float(row.get("start_date") or time.time())) / 3600
        money = billing.billed(gpu_rate, disk_rate, self._running_hours(), exists_h, self.s.max_hours,
                            self.s.budget_usd, self.s.expected_hours)
        status = row.get("actual_status") or "scheduling"
        if rows.outbid(row):
            status = ("stopped: outbid, or stopped by the watchdog (interruptible): it runs again when its bid is the "
                      "highest; `python -m deploy bid PRICE` raises it")
        elif row.get("intended_status") == "stopped":
            status = "stopped (disk kept, GPU not billed)"
        return {
            "reachable": rows.is_running(row),
            "provider": "vast",
            "instance": iid,
            "label": self.label,
            "status": status,
            "status_msg": (row.get("status_msg") or "").strip(),
            "gpus": f"{row.get('num_gpus')}x {row.get('gpu_name')}",
            "price_per_hour": (f"{billing.fmt_usd(gpu_rate + disk_rate)}/h while running "
                               f"({billing.fmt_usd(disk_rate)}/h disk only while stopped)"),
            "time_rented": _fmt_hours(exists_h),
            "time_running": _fmt_hours(money["running_hours"]),
            "spent": (f"{billing.fmt_usd(money['spent_usd'])} (GPU {billing.fmt_usd(money['gpu_usd'])} while running, "
                      f"disk {billing.fmt_usd(money['disk_usd'])} since created)"),
            "projected_total": billing.fmt_usd(money["projected_usd"]),
            "guards": (f"max_hours {self.s.max_hours}, budget {billing.fmt_usd(self.s.budget_usd)}, "
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


def _fmt_hours(h: float) -> str:
    return f"{int(h)}h {int(h * 60) % 60:02d}m"


def _unpin(known_hosts: Path, host: Host) -> None:
    """Forget a destroyed instance's host keys: its address may serve another machine next time."""
    import paramiko

    from deploy.host.remote import known_hosts_name

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
