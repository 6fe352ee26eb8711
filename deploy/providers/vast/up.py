"""`offers` and `up`: reuse this project's instance, or rent the best offer that comes up.

A mixin of VastProvider (deploy/providers/vast/provider.py). Offers are found and ranked by
offers.py and the job model (deploy/plan/); each one is rented by create.py and waited for
by wait.py, and one that does not come up is destroyed (its logs kept) before the next is
tried. `up --dry-run` prints the create request it would send, with no secret in it.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

from deploy.errors import UsageError
from deploy.plan import inputs, job_model, report
from deploy.providers.base import Host
from deploy.providers.vast import billing, offers, registry, rows
from deploy.providers.vast.wait import NotReady


class Up:
    # -- finding offers -----------------------------------------------------------------------
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
