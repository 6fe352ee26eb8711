"""One create request on Vast.ai: the onstart script, the request's fields, what a refusal means, the billed price.

A mixin of VastProvider (deploy/providers/vast/provider.py), used by `up` (up.py) for each
offer it tries. The API call itself and the reading of its answer are api.py's.
"""

from __future__ import annotations

import sys

from deploy.errors import UsageError
from deploy.providers.vast import billing, image, offers
from deploy.providers.vast.watchdog_setup import WATCHDOG_DIR


class Create:
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
