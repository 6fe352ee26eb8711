"""An instance that exists: start it again before sync/fetch, change its bid, describe it for `status`.

A mixin of VastProvider (deploy/providers/vast/provider.py). What a row's statuses mean is
rows.py; the money is billing.py's arithmetic over the running-time ledger wait.py keeps.
"""

from __future__ import annotations

import sys
import time

from deploy.errors import UsageError
from deploy.providers.vast import billing, rows
from deploy.providers.vast.wait import NotReady


class Running:
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


def _fmt_hours(h: float) -> str:
    return f"{int(h)}h {int(h * 60) % 60:02d}m"
