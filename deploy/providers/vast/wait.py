"""Waiting for a Vast.ai instance to come up, fresh or started again, and the running-time ledger it feeds.

A mixin of VastProvider. What the statuses mean is rows.py; this is the polling: a
fresh instance that dies or shows a fatal status_msg fails at once, a restarted one is
waited through its `exited` lag (SkyPilot resumes EXITED/STOPPED instances), an
interruptible one whose contract stays stopped is outbid (dstack's reading of the row).
"""

from __future__ import annotations

import sys
import time

from deploy.errors import UsageError
from deploy.providers.base import Host
from deploy.providers.vast import billing, rows


class NotReady(Exception):
    """An instance that will not become usable (exited, fatal status, offline, timed out)."""


class Outbid(NotReady):
    """An interruptible instance the market keeps stopped: its bid is not the highest."""


class WaitUntilReady:
    def _ssh_host(self, addresses: list[tuple[str, int]]) -> Host:
        (h, p), rest = addresses[0], addresses[1:]
        return Host(host=h, port=p, user=self.s.ssh_user, identity_file=str(self._identity_file()),
                    fallbacks=[{"host": fh, "port": fp} for fh, fp in rest])

    def _ssh_answers(self, host: Host) -> Host | None:
        """One SSH attempt per address (pinning the host key on first contact); the one that worked."""
        from deploy.host.remote import Remote

        try:
            with Remote(host, self.state.known_hosts, connect_timeout=10).connect(
                    retry_for=0, retry_auth=True, quiet=True) as r:
                return r.host
        except UsageError as exc:
            if "CHANGED" in str(exc):
                raise
            return None

    def _wait_ready(self, iid: int, timeout_s: float | None = None, restarting: bool = False) -> Host:
        """Poll until the instance runs and answers SSH, showing status_msg as it changes.

        A fresh instance that reads exited/offline/unknown, or any with a fatal status_msg
        (`created` + "OCI runtime create failed", as dstack reads it), fails at once. A
        started one (`restarting`) reads exited/stopped until its GPUs are free, so that is
        waited through; an interruptible one whose contract stays stopped is outbid.
        """
        timeout_s = timeout_s or (self.s.restart_timeout_minutes if restarting else self.s.ready_timeout_minutes) * 60
        outbid_grace = min(timeout_s, max(6 * self.s.poll_seconds, 1.0))
        start = time.monotonic()
        last = None
        while True:
            row = self._show(iid)
            if row is None:
                raise NotReady(f"instance {iid} disappeared while starting")
            status, msg = row.get("actual_status"), (row.get("status_msg") or "").strip()
            elapsed = time.monotonic() - start
            if (status, msg) != last:
                print(f"instance {iid} [{elapsed:4.0f}s]: {status or 'scheduling'}"
                      + (f" - {msg}" if msg else ""), file=sys.stderr)
                last = (status, msg)
            self._observe(row)
            fatal = rows.fatal_message(row)
            if fatal and not (restarting and status in rows.STOPPED_STATUSES):
                raise NotReady(f"instance {iid} cannot start ({status}): {fatal}")
            if rows.outbid(row):
                if elapsed > outbid_grace:
                    raise Outbid(f"instance {iid} is outbid")
            elif status in rows.DEAD_STATUSES and not (restarting and status in rows.STOPPED_STATUSES):
                raise NotReady(f"instance {iid} is {status}" + (f": {msg}" if msg else ""))
            if status == "running":
                addresses = rows.addresses(row)
                if addresses:
                    answered = self._ssh_answers(self._ssh_host(addresses))
                    if answered is not None:
                        first = (answered.host, answered.port)
                        return self._ssh_host([first] + [a for a in addresses if a != first])
            if elapsed > timeout_s:
                where = "SSH did not answer" if status == "running" else f"still {status or 'scheduling'}"
                key = "restart_timeout_minutes" if restarting else "ready_timeout_minutes"
                raise NotReady(f"instance {iid}: {where} after {elapsed / 60:.1f} min "
                               f"(vast.{key}={getattr(self.s, key):g})")
            time.sleep(self.s.poll_seconds)

    def _start_again(self, iid: int, row: dict) -> Host:
        """Start a stopped (or outbid) instance and wait through the restart lag until SSH answers."""
        if rows.is_stopped(row) or rows.outbid(row):
            self.api.start(iid)
        try:
            return self._wait_ready(iid, restarting=True)
        except Outbid:
            raise UsageError(_outbid_message(iid, self.vstate.get("bid_price") or self.s.bid_price)) from None

    # -- billing: GPU while running, disk while it exists ------------------------------------
    def _observe(self, row: dict) -> None:
        """Keep the running-time ledger in .deploy/ (Vast bills the GPU only while running).

        The service keeps no history we can read, so deploy/ notes when it sees the instance
        start and stop running. A stop it did not see (the watchdog's) is closed when it is
        next seen, which can only overstate the GPU part, never hide it.
        """
        iid = self.state.data.get("vast", {}).get("instance_id")
        if iid is None or row.get("id") != iid:
            return
        now, running = time.time(), rows.is_running(row)

        def apply(v: dict) -> bool:
            if running and v.get("running_since") is None:
                v["running_since"] = now
            elif not running and v.get("running_since") is not None:
                v["gpu_seconds"] = v.get("gpu_seconds", 0.0) + now - v.pop("running_since")
            else:
                return False
            return True

        self.state.update_ledger(iid, apply)  # never a whole save: status and watch call this unlocked

    def _running_hours(self) -> float:
        v = self.vstate
        seconds = v.get("gpu_seconds", 0.0)
        if v.get("running_since") is not None:
            seconds += time.time() - v["running_since"]
        return seconds / 3600


def _outbid_message(iid: int, bid: float | None) -> str:
    now = f" (now {billing.fmt_usd(bid)}/h)" if bid else ""
    return (f"instance {iid} is outbid (interruptible rental): the market keeps it stopped until your bid{now} is "
            f"the highest again. Raise it with `python -m deploy bid PRICE`, or wait; once it runs again, "
            f"`python -m deploy start --resume` continues training from the last checkpoint")
