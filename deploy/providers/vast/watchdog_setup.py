"""Installing the cost watchdog (deploy/host/shipped/watchdog.py) on a Vast.ai instance, and telling it someone is busy.

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
        """sh setting $wpy: the first interpreter on the host that is Python >= 3.8.

        The watchdog needs only the standard library, so any Python the image has will do:
        the system one first (Vast's images: /usr/bin/python3 from python3-full, vast-ai/base-image
        Dockerfile:153), then /venv/main's (a conda Python 3.10 by default, Dockerfile:331,355),
        then the configured interpreter. $wpy stays empty when there is none.
        """
        from deploy.host.layout import Layout
        from deploy.host.remote import q

        return (f"wpy=; for c in python3 /usr/bin/python3 /venv/main/bin/python {q(Layout.host_python(self.config))}; "
                f"do \"$c\" -c 'import sys; sys.exit(sys.version_info < (3, 8))' >/dev/null 2>&1 && "
                f"{{ wpy=$c; break; }}; done")

    def _install_watchdog(self, host: Host, quiet: bool = False) -> str:
        """Copy the watchdog (deploy/host/shipped/) to the instance and (re)start it detached; -> "OK", or why not.

        It is one self-contained file: deploy/ is not synced to the instance, only trainer/.
        """
        from deploy.host.remote import Remote, rpath

        ws = self.config.get("remote", {}).get("workspace", "/workspace")
        wd = f"{ws.rstrip('/')}/{WATCHDOG_DIR}"
        from deploy.host import shipped

        here = Path(shipped.__file__).resolve().parent  # the files that run on the host
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
            # (no instance key, no Python >= 3.8) must be reported now, not discovered on the bill.
            said = r.check(
                f"cd {rpath(wd)} && {{ [ -f watchdog.pid ] && kill $(cat watchdog.pid) 2>/dev/null; true; }} && "
                f"size=$(wc -c < watchdog.log 2>/dev/null || echo 0) && "
                f"{self._watchdog_python_sh()}; "
                f"if [ -z \"$wpy\" ]; then echo 'watchdog: no Python >= 3.8 on the host; exiting'; exit 0; fi; "
                f"{{ nohup setsid \"$wpy\" watchdog.py --config config.json >> watchdog.log 2>&1 < /dev/null & }}; "
                f"i=0; while [ $i -lt 150 ]; do new=$(tail -c +$((size + 1)) watchdog.log 2>/dev/null); "
                f"case \"$new\" in *'watching instance'*) echo OK; exit 0;; *exiting*) printf '%s\\n' \"$new\" | tail -n 1; "
                f"exit 0;; esac; sleep 0.1; i=$((i + 1)); done; echo 'no word from the watchdog after 15 s'",
                "starting the watchdog").strip()
        why = "OK" if said == "OK" else f"{said.split('watchdog: ', 1)[-1]}; see {wd}/watchdog.log there"
        if why != "OK" and not quiet:
            print(f"warning: the cost watchdog is not running on the instance ({why})", file=sys.stderr)
        return why

    def _watchdog_alive(self, host: Host) -> bool:
        """Is the watchdog process `up` started still running on the instance (its pid, its command line)?"""
        from deploy.host.remote import Remote, rpath

        ws = self.config.get("remote", {}).get("workspace", "/workspace")
        wd = rpath(f"{ws.rstrip('/')}/{WATCHDOG_DIR}")
        with Remote(host, self.state.known_hosts).connect(retry_for=30, quiet=True) as r:
            out = r.run(f"pid=$(cat {wd}/watchdog.pid 2>/dev/null); case \"$pid\" in ''|*[!0-9]*) exit 0;; esac; "
                        f"tr '\\000' ' ' < /proc/$pid/cmdline 2>/dev/null | grep -q watchdog.py && echo alive").stdout
        return out.strip() == "alive"

    def ensure_watchdog(self) -> None:
        """Before a run starts: the cost watchdog is alive, or is started now; no run trains without it."""
        host = self.host()
        if self._watchdog_alive(host):
            return
        print("the cost watchdog is not running on the instance: starting it", file=sys.stderr)
        try:
            why = self._install_watchdog(host, quiet=True)
        except UsageError as exc:
            why = str(exc)
        if why != "OK":
            raise UsageError(f"the cost watchdog cannot run on instance {self.vstate.get('instance_id')} ({why}): "
                             f"no run starts without it (it stops the instance at max_hours, budget_usd or when idle)")

    def _touch_activity(self) -> None:
        """Tell the watchdog someone is using the instance (sync/fetch): its idle clock restarts."""
        from deploy.host.remote import Remote, rpath

        host = self.state.get_host()
        if host is None:
            return
        ws = self.config.get("remote", {}).get("workspace", "/workspace")
        try:
            with Remote(host, self.state.known_hosts).connect(retry_for=10, quiet=True) as r:
                r.run(f"mkdir -p {rpath(ws + '/' + WATCHDOG_DIR)} && touch {rpath(ws + '/' + WATCHDOG_DIR)}/activity")
        except UsageError:
            pass  # the command that follows reports an unreachable host itself
