"""Suite-wide: tests that Ctrl-C a child process need SIGINT to reach it.

A shell starts background commands (`make test &`, `nohup ... &`) with SIGINT ignored, and
an ignored signal is inherited through fork and exec: every `python -m deploy` a test
started would then ignore the test's SIGINT, and the Ctrl-C tests failed for reasons that
have nothing to do with the code. A Python handler, unlike SIG_IGN, is reset to the
default on exec, so installing Python's own handler here gives every child the default.
"""

import signal


def pytest_configure(config):
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
