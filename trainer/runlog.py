"""Console output mirrored into the run's train.log (what `make logs` tails remotely).

Hand-written because the log must hold everything the run prints (Keras's own
messages and warnings included), not only what goes through `logging`.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path


class _Tee:
    def __init__(self, stream, log):
        self._stream, self._log = stream, log

    def write(self, data):
        self._stream.write(data)
        self._log.write(data)
        self._log.flush()  # a killed run keeps everything up to its last line
        return len(data)

    def flush(self):
        self._stream.flush()
        self._log.flush()

    def isatty(self):
        return self._stream.isatty()

    def fileno(self):
        return self._stream.fileno()

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def tee(path: Path):
    """Append stdout and stderr to `path` while the block runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8", buffering=1) as log:
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = out, err
