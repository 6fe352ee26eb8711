"""`logs [--follow]`: the run's train.log, live.

Following is `tail -c +OFFSET -F --pid=<run pid>` on the host: it ends by itself when
the run ends, and we count the bytes received, so when the SSH connection drops we
reconnect and continue at exactly the next byte (nothing repeated, nothing lost).
Ctrl-C only stops the viewing; the run is detached and keeps going. The log is the host's
text: it reaches the terminal through deploy/host/host_text.py (no control sequence of its own).
"""

from __future__ import annotations

import sys
import time

from deploy.errors import UsageError
from deploy.host import host_text
from deploy.host.layout import Layout
from deploy.host.remote import Remote, rpath
from deploy.host.shipped import runstate
from deploy.host.shipped.runstate import STATE_SH

RECONNECT_FOR = 120  # seconds of reconnect attempts after a dropped connection


def _run_dir(layout: Layout, state, run: str | None) -> tuple[str, str]:
    run = run or state.current_run
    if not run:
        raise UsageError("no run started yet: `python -m deploy start` (or `make deploy`) first")
    return run, layout.run_dir(run)


def probe_script(run_dir: str, lines: int) -> str:
    """sh: size of train.log, byte length of its last `lines` lines, then the run's state (runstate.py)."""
    d = rpath(run_dir)
    return STATE_SH + f"""
cd {d} 2>/dev/null || {{ echo missing; exit 0; }}
size=$(wc -c < train.log 2>/dev/null || echo 0)
tail_bytes=$(tail -n {int(lines)} train.log 2>/dev/null | wc -c)
echo "$size $tail_bytes $(run_state {d})"
"""


def run_state(remote: Remote, run_dir: str) -> tuple[str, int | None]:
    """('running'|'finished'|'failed'|'stopped'|'missing', exit code): the host's answer to the one
    run-alive rule (deploy/host/shipped/runstate.py)."""
    return runstate.parse(remote.run(STATE_SH + f"run_state {rpath(run_dir)}").stdout)


def show(remote: Remote, layout: Layout, state, run: str | None = None, lines: int = 50) -> int:
    run, run_dir = _run_dir(layout, state, run)
    r = remote.run(f"tail -n {int(lines)} {rpath(run_dir)}/train.log")
    if not r.ok:
        raise UsageError(f"run {run} has no train.log on {remote.host.host} yet: did `start` succeed?")
    sys.stdout.write(host_text.clean(r.stdout))
    sys.stdout.flush()
    status, code = run_state(remote, run_dir)
    print(f"-- run {run}: {status}" + (f" (exit code {code})" if code is not None else ""), file=sys.stderr)
    return 0


def follow(remote: Remote, layout: Layout, state, run: str | None = None, lines: int = 50) -> int:
    """Stream until the run ends; returns the run's exit code."""
    run, run_dir = _run_dir(layout, state, run)
    d = rpath(run_dir)
    screen = host_text.Writer(sys.stdout.buffer)  # one for the whole follow: a sequence may span two reads
    try:
        return _follow(remote, run, run_dir, d, lines, screen)
    finally:
        screen.close()


def _follow(remote: Remote, run: str, run_dir: str, d: str, lines: int, screen: host_text.Writer) -> int:
    offset = None
    while True:
        probe = remote.run(probe_script(run_dir, lines)).stdout.split()
        if not probe or probe[0] == "missing":
            raise UsageError(f"run {run} does not exist on {remote.host.host}")
        if len(probe) < 2 or not (probe[0].isdigit() and probe[1].isdigit()):
            raise UsageError(f"cannot read the size of {run_dir}/train.log on {remote.host.host}: "
                             f"{host_text.one_line(' '.join(probe))[:160]!r}")
        size, tail_bytes = int(probe[0]), int(probe[1])
        pid = runstate.parse_pid(" ".join(probe[2:]))
        if offset is None:
            offset = size - tail_bytes
        received = 0

        def out(data: bytes) -> None:
            nonlocal received
            received += len(data)  # the host's bytes, counted before sanitising: the resume offset
            screen(data)

        if pid is None:
            # ended, or not alive (a stale pid after a host restart): print what is left and stop
            code = remote.stream(f"tail -c +{offset + 1} {d}/train.log", on_bytes=out)
        else:
            code = remote.stream(f"exec tail -c +{offset + 1} -F -s 0.5 --pid={pid} {d}/train.log 2>/dev/null",
                                 on_bytes=out)
        offset += received
        if code is None:  # the connection dropped; the run did not
            print(f"\n-- connection to {remote.host.host} lost; reconnecting (the run goes on)", file=sys.stderr)
            remote.close()
            remote.connect(retry_for=RECONNECT_FOR)
            continue
        status, exit_code = run_state(remote, run_dir)
        if status == "running":  # tail ended early (log rotated away?): keep following
            time.sleep(1)
            continue
        if status == "stopped":
            raise UsageError(f"run {run} stopped without an exit status (process killed or host rebooted): "
                             f"`python -m deploy start --resume` continues it")
        # the log may have grown between tail's end and the exit status: print the rest
        remote.stream(f"tail -c +{offset + 1} {d}/train.log", on_bytes=out)
        screen.close()
        if exit_code == 0:
            print(f"-- run {run} finished (exit code 0); `make fetch` brings the results home", file=sys.stderr)
        else:
            print(f"error: run {run} failed with exit code {exit_code} (last log lines above): fix the cause, "
                  f"then `python -m deploy start --resume` or start again", file=sys.stderr)
        return exit_code if exit_code is not None else 1
