"""TensorFlow's C++ log lines kept out of the trainer's output, without turning anything off.

Two sources, two remedies:

1. TensorFlow's own INFO/WARNING lines (`I0000 ... cpu_feature_guard.cc ...`, the oneDNN
   notice) and, with them, absl's "WARNING: All log messages before absl::InitializeLog()
   is called are written to STDERR" (printed once, before the first line that passes the
   level): `TF_CPP_MIN_LOG_LEVEL=2`, set before TensorFlow loads. oneDNN stays on: only
   its notice goes.
2. ERROR lines that are not errors, printed while CUDA builds of TensorFlow load
   (`E0000 ... Unable to register cuDNN factory ...`, `computation placer already
   registered`, `failed call to cuInit` on a machine without a GPU: the trainer's own
   `devices:` line says that). Level 2 keeps ERROR lines, and level 3 would hide real
   ones, so while `tensorflow` is first imported (and lists its GPUs) the process's
   stderr (fd 2, where C++ writes) goes to a temporary file; afterwards every line but
   those known ones is written to the real stderr.

A user who sets TF_CPP_MIN_LOG_LEVEL asked for TensorFlow's logs: then nothing is touched.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

LEVEL = "2"
NOISE = re.compile(
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|^[EW]\d{4} [\d:.]+\s+\d+ \S+:\d+\] (?:"
    r"Unable to register cu(?:DNN|FFT|BLAS) factory"
    r"|computation placer already registered"
    r"|failed call to cuInit"
    r"|TF-TRT Warning)"
)
_installed = False


def quiet_tensorflow() -> None:
    """Call before anything imports TensorFlow (trainer/cli.py does, first thing)."""
    global _installed
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ or _installed or "tensorflow" in sys.modules:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = LEVEL
    sys.meta_path.insert(0, _FirstImport("tensorflow", _list_gpus))
    _installed = True


def is_noise(line: str) -> bool:
    return bool(NOISE.match(line))


@contextlib.contextmanager
def stderr_filtered():
    """Native writes to fd 2 inside the block are replayed afterwards, known noise dropped."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real stderr (embedded, closed): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", "replace")
            kept = "".join(line for line in text.splitlines(keepends=True) if not is_noise(line))
            if kept:
                os.write(2, kept.encode("utf-8"))


def _list_gpus(module) -> None:
    # CUDA builds print their cuInit / factory lines on the first device query: done here,
    # inside the filter. Listing physical devices initialises nothing (visible devices and
    # memory growth can still be set afterwards).
    with contextlib.suppress(Exception):
        module.config.list_physical_devices("GPU")


class _FirstImport(importlib.abc.MetaPathFinder):
    """Finds `name` once (through the other finders) and runs its import inside stderr_filtered()."""

    def __init__(self, name: str, after=None):
        self.name, self.after = name, after

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)  # once: and the lookup below must not find us again
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _FilteredLoader(spec.loader, self.after)
        return spec


class _FilteredLoader(importlib.abc.Loader):
    def __init__(self, inner, after=None):
        self.inner, self.after = inner, after

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        with stderr_filtered():
            self.inner.exec_module(module)
            if self.after is not None:
                self.after(module)

    def __getattr__(self, name):  # get_resource_reader, is_package, ...: the real loader's
        return getattr(self.inner, name)
