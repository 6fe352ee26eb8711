"""One deploy command at a time per `.deploy/`: an exclusive `fcntl.flock` on .deploy/lock.

Two terminals on one project raced for real: two `up`s rented two instances and
recorded one; a `fetch` of an ended run, while `start --resume` ran, recorded the
results as final with the run training again (so `down` would destroy it unguarded).
Every command that changes `.deploy/` or rents takes this lock; read-only ones
(status, logs, offers, check, ssh) do not. flock rather than a pid file: the kernel
drops it when the holder dies, even by kill -9, so a crash never leaves it stuck.
The holder's pid is written into the file only to name it in the error.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from deploy.errors import UsageError

# A short wait: a command that is finishing (a state write) lets go within it.
# DEPLOY_LOCK_WAIT (seconds) changes it, e.g. for scripts that queue commands on purpose.
WAIT_S = 5.0


class DeployLock:
    def __init__(self, root: str | os.PathLike, wait_s: float | None = None):
        self.path = Path(root) / "lock"
        if wait_s is None:
            try:
                wait_s = float(os.environ.get("DEPLOY_LOCK_WAIT", WAIT_S))
            except ValueError:
                raise UsageError("DEPLOY_LOCK_WAIT must be a number of seconds") from None
        self.wait_s = wait_s
        self._fd: int | None = None
        self._depth = 0  # `run` takes it per step; a step inside a locked step does not wait on itself

    def acquire(self) -> None:
        if self._fd is not None:
            self._depth += 1
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                    os.close(fd)
                    raise UsageError(f"another deploy command is running (pid {holder}) on {self.path.parent}/: "
                                     f"wait for it to finish, then run this one again") from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd, self._depth = fd, 1

    def release(self) -> None:
        if self._fd is None:
            return
        self._depth -= 1
        if self._depth > 0:
            return
        fd, self._fd = self._fd, None
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> "DeployLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
