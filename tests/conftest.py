"""Suite-wide: tests that Ctrl-C a child process need SIGINT to reach it.

A shell starts background commands (`make test &`, `nohup ... &`) with SIGINT ignored, and
an ignored signal is inherited through fork and exec: every `python -m deploy` a test
started would then ignore the test's SIGINT, and the Ctrl-C tests failed for reasons that
have nothing to do with the code. A Python handler, unlike SIG_IGN, is reset to the
default on exec, so installing Python's own handler here gives every child the default.

No test may send a request beyond 127.0.0.1: the public registries an image reference can
name are mapped to a closed port here (deploy/providers/vast/registry.py's DEPLOY_REGISTRY_MAP), and tests
that look an image up map them to their own registry server.
"""

import os
import signal

OFFLINE_REGISTRIES = " ".join(f"{r}=127.0.0.1:9" for r in ("docker.io", "ghcr.io", "registry.gitlab.com", "nvcr.io",
                                                           "quay.io", "gcr.io", "public.ecr.aws"))


def pytest_configure(config):
    os.environ.setdefault("DEPLOY_REGISTRY_MAP", OFFLINE_REGISTRIES)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
