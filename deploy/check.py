"""`python -m deploy check`: a read-only preflight that rents nothing and costs nothing.

First what the run will use, checked here for both providers (deploy/preflight.py:
train.args through the trainer's own parser, train.config, the dataset scan,
remote.python, the ssh host's name); with provider ssh, then a read-only visit to the host.
For Vast.ai it asks the service only what reading costs nothing (the account, its SSH keys, one offer
search, one broader search when nothing matches) and checks the local half (the SSH key,
the image reference). Each finding is one line: `ok`, `warn` (works, but look), or `FIX`
(what to change). Exit 2 when anything must be fixed. The API key is never printed.
"""

from __future__ import annotations

from deploy import preflight
from deploy.preflight import Findings
from deploy.providers.vast import checks as vast_checks


def run_check(provider) -> int:
    f = Findings()
    report = preflight.run_local(provider.config, f)
    if provider.name != "vast":
        preflight.ssh_host(provider, f, upload_bytes=(report or {}).get("bytes", 0))
        if f.failed:
            print("check: fix the FIX lines above; nothing was started or changed on the host")
            return 2
        print("check: ready (`make deploy`); nothing was changed on the host")
        return 0
    vast_checks.run(provider, f)
    if f.failed:
        print("check: fix the FIX lines above; nothing was rented")
        return 2
    print("check: ready to rent (`make deploy`); nothing was rented")
    return 0
