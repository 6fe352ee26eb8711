"""`down`: destroy this project's instance (and any other carrying its label), unless results are unfetched.

A mixin of VastProvider (deploy/providers/vast/provider.py).
"""

from __future__ import annotations

from pathlib import Path

from deploy.errors import UsageError
from deploy.providers.base import Host


class Down:
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
