"""What a provider is: the few verbs that differ between "rent a machine" and "use my box".

Everything after "the host answers SSH" (sync, start, logs, status, fetch) is written
once in deploy/ and only ever sees a `Host`. A provider is cut like SkyPilot's
provisioners: find offers, create, wait until reachable, describe, destroy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field

from deploy.errors import UsageError  # noqa: F401  (providers raise it: one line, exit 2)


@dataclass
class Host:
    """How to reach a machine by SSH (what rsync and fabric both need)."""

    host: str
    port: int = 22
    user: str = "root"
    identity_file: str | None = None
    # Other addresses to try in order when the first does not answer (Vast.ai: proxy after direct).
    fallbacks: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Host":
        return cls(**d)


class Provider(ABC):
    """One per `provider:` value in configs/deploy.yaml; constructed with the whole config and the state."""

    name: str = ""
    # True where a fresh machine may answer SSH before its authorized_keys is in place
    # (Vast.ai installs the key after boot): connection attempts then retry a refused key too.
    retry_auth: bool = False

    def __init__(self, config: dict, state):
        self.config = config
        self.state = state  # deploy.local.state.State: the .deploy/ folder

    def offers(self, as_json: bool = False) -> int:
        """Print what could be rented (only meaningful for renting providers)."""
        print("[]" if as_json else f"provider '{self.name}' rents nothing: there are no offers to list")
        return 0

    @abstractmethod
    def up(self, dry_run: bool = False) -> Host:
        """Make sure a machine exists and answers SSH; record it in the state and return it."""

    @abstractmethod
    def host(self) -> Host:
        """The recorded machine (raises UsageError when there is none: run `up` first)."""

    def ensure_running(self) -> None:
        """Bring a stopped machine back (Vast.ai: a stopped instance), before sync/fetch."""

    def ensure_watchdog(self) -> None:
        """Before a run starts: whatever guards the rental's cost is alive (Vast.ai: the watchdog)."""

    def describe(self) -> dict:
        """Provider facts for `status` (price, time rented, money spent...)."""
        return {}

    def remote_env(self) -> dict:
        """Extra environment for the detached run on the host (e.g. the watchdog's settings)."""
        return {}

    @abstractmethod
    def down(self, force: bool = False) -> None:
        """Release the machine (destroy / forget) and clean the state."""
