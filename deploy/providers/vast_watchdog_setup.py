"""Installing the cost watchdog (deploy/watchdog.py) on a Vast.ai instance, and telling it someone is busy.

A mixin of VastProvider (it uses the provider's settings, state and config): the one job
"put the watchdog on the instance and start it" kept out of the rental life cycle.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from deploy.errors import UsageError
from deploy.providers.base import Host

WATCHDOG_DIR = ".watchdog"  # under the remote workspace


class WatchdogSetup:
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

    def _watchdog_python_sh(self) -> str:
        """sh setting $wpy: the first interpreter on the host that has the vastai SDK.

        The watchdog needs only `vastai`. With remote.python auto-venv or overlay, the venv
        that sync builds has it (the `watchdog` extra), but `up` starts the watchdog before
        any sync; Vast's own images carry the SDK in their Python; our image in python3.
        """
        from deploy.layout import Layout
        from deploy.remote import q, rpath

        ws = self.config.get("remote", {}).get("workspace", "/workspace")
        venv_py = rpath(f"{ws.rstrip('/')}/venv/bin/python")
        return (f"wpy=python3; for c in {venv_py} {q(Layout.host_python(self.config))} /venv/main/bin/python python3; "
                f"do \"$c\" -c 'import vastai' >/dev/null 2>&1 && {{ wpy=$c; break; }}; done")

    def _install_watchdog(self, host: Host) -> None:
        """Copy deploy/watchdog.py to the instance and (re)start it detached.

        It is one self-contained file: deploy/ is not synced to the instance, only trainer/.
        """
        from deploy.remote import Remote, rpath

        ws = self.config.get("remote", {}).get("workspace", "/workspace")
        wd = f"{ws.rstrip('/')}/{WATCHDOG_DIR}"
        here = Path(__file__).resolve().parent.parent
        source = (here / "watchdog.py").read_text()
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
                f"{self._watchdog_python_sh()}; "
                f"{{ nohup setsid \"$wpy\" watchdog.py --config config.json >> watchdog.log 2>&1 < /dev/null & }}; "
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
