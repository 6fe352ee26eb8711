"""No credential over plain http:// to another machine.

A bearer token (dataset.token_env), Kaggle's Basic credentials or the Vast.ai API key in
an Authorization header over http:// can be read by anyone on the path. Loopback
addresses are allowed: a local mirror, or the test suite's fakes, never leave the machine.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from deploy.errors import UsageError


def is_loopback_host(host: str) -> bool:
    """A bare host name or address (no port, no brackets) that never leaves this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refuse_plain_http(url: str, what: str, setting: str) -> None:
    """Raise when `url` would carry `what` (a credential) unencrypted to another machine."""
    parts = urlsplit(url)
    if parts.scheme.lower() == "http" and not is_loopback_host(parts.hostname or ""):
        raise UsageError(f"refusing to send {what} over plain http:// to {parts.hostname}: anyone on the way could "
                         f"read it; use https:// in {setting}")
