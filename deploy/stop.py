"""`stop`: end the run on the host, keep everything (the host, its disk, the checkpoints).

SIGTERM goes to the run's whole process group (start.py launches run.sh with setsid, so
the group is the run script and the trainer under it): the trainer saves a checkpoint
and exits 143, run.sh's TERM trap writes exit_status 143. A run started by hand
(`sh run.sh` in a terminal) is not a group leader; then its children get the signal and
the script itself. Nothing is destroyed: `start --resume` continues, `fetch` brings the
results home, `down` releases the machine.
"""

from __future__ import annotations

import sys
import time

from deploy.errors import UsageError
from deploy.host.layout import Layout
from deploy.host.remote import Remote, rpath
from deploy.host.shipped.runstate import STATE_SH
from deploy.logs import run_state

WAIT_S = 120  # the trainer's checkpoint on SIGTERM is one model save: seconds, even for a large model


def stop(remote: Remote, layout: Layout, state, run: str | None = None, wait_s: float = WAIT_S) -> int:
    run = run or state.current_run
    if not run:
        raise UsageError("no run started yet: nothing to stop")
    run_dir = layout.run_dir(run)
    said = remote.run(STATE_SH + f"""
s=$(run_state {rpath(run_dir)})
case "$s" in
  running*) pid=${{s#running }}
    kill -TERM -- "-$pid" 2>/dev/null || {{ pkill -TERM -P "$pid" 2>/dev/null; kill -TERM "$pid"; }}
    echo "signalled $pid";;
  *) echo "$s";;
esac
""").stdout.split()
    if not said or said[0] != "signalled":
        status, code = run_state(remote, run_dir)
        if status == "missing":
            raise UsageError(f"run {run} does not exist on {remote.host.host}")
        print(f"run {run} is not running ({status}" + (f", exit code {code}" if code is not None else "")
              + "): nothing to stop")
        return 0
    print(f"sent SIGTERM to run {run} on {remote.host.host} (pid {said[1]}); waiting for its checkpoint",
          file=sys.stderr)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        status, code = run_state(remote, run_dir)
        if status != "running":
            print(f"run {run} stopped ({status}" + (f", exit code {code}" if code is not None else "")
                  + "); the host and its files are kept: `python -m deploy start --resume` continues it, "
                    "`make fetch` brings the results home, `make destroy` releases the host")
            return 0
        time.sleep(1)
    raise UsageError(f"run {run} is still running {wait_s:.0f} s after SIGTERM: look at `make logs`; "
                     f"`python -m deploy stop` again sends another SIGTERM")
