"""Provider `ssh`: a machine you already have (a lab box, another cloud). Nothing to rent.

`up` checks that the host answers SSH (retrying while it boots) and records it;
`down` only forgets it (the host and its files are left as they are).
"""

from __future__ import annotations

from deploy.errors import UsageError
from deploy.host.remote import Remote
from deploy.providers.base import Host, Provider


class SshProvider(Provider):
    name = "ssh"
    # A host we do not boot: a refused port is a wrong ssh.port (or no sshd), not a delay to wait out.
    refused_attempts = 4

    def _configured_host(self) -> Host:
        ssh = self.config["ssh"]
        if not ssh.get("host"):
            raise UsageError("ssh.host is not set: put your GPU box's address in the deploy config (ssh: {host: ...})")
        return Host(host=ssh["host"], port=ssh["port"], user=ssh["user"], identity_file=ssh["identity_file"])

    def up(self, dry_run: bool = False) -> Host:
        host = self._configured_host()
        if dry_run:
            print(f"would use {host.user}@{host.host}:{host.port}")
            return host
        ssh = self.config["ssh"]
        with Remote(host, self.state.known_hosts, ssh["connect_timeout"]).connect(
                retry_for=ssh["retry_for"], refused_attempts=self.refused_attempts) as r:
            host = r.host
        self.state.set_host(self.name, host, self.config["remote"]["workspace"])
        return host

    def host(self) -> Host:
        host = self.state.get_host()
        if host is None or self.state.data.get("provider") != self.name:
            raise UsageError("no host recorded: run `python -m deploy up` (or `make deploy`) first")
        return host

    def describe(self) -> dict:
        return {"provider": "ssh (your own host)"}

    def down(self, force: bool = False) -> None:
        host = self.state.get_host()
        if host is None:
            print("no host recorded; nothing to forget")
            return
        unfetched = self.state.unfetched_runs()
        if unfetched and not force:
            print(f"note: run(s) {', '.join(unfetched)} not fetched since they ended; they stay on the host")
        self.state.clear_host()
        print(f"forgot {host.user}@{host.host}:{host.port} (the host and its files are untouched; "
              f"its pinned key stays in {self.state.known_hosts})")
