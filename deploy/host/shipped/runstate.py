"""The one rule for "is this run alive?", used by logs, fetch, start, status, stop and the watchdog.

A run folder (<workspace>/runs/<run>/, written by deploy/start.py's run.sh) holds:
`exit_status` once the run ended, and `pid` while it runs. A pid file alone proves
nothing: after a host restart (or a Vast.ai stop/start) the pid may belong to any
other process, so `kill -0` says "alive" forever. A run is alive only when that
process's command line carries the run script's marker AND this run's folder
(run.sh re-executes itself so that even `sh run.sh` typed by hand does).

The rule is written once, as a POSIX sh function, because every caller but the
watchdog asks it over SSH; the watchdog (stdlib only, on the instance) runs the same
function through /bin/sh. This file is copied next to watchdog.py on the instance,
so it imports nothing from deploy/.
"""

from __future__ import annotations

import re
import subprocess

RUN_MARK = "deploy-run.sh"  # run.sh's first argument, visible in /proc/<pid>/cmdline

# Run names become folder names on both sides: no "/", no "..", no leading dot or dash.
RUN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")  # fullmatch: "$" would let a trailing newline in

# sh: `run_state DIR` prints one of
#   missing | ended CODE | running PID | stopped
# ("stopped": neither an exit status nor a live run process - killed, or the host restarted).
STATE_SH = r"""
run_state() {
  [ -d "$1" ] || { echo missing; return 0; }
  if [ -f "$1/exit_status" ]; then echo "ended $(cat "$1/exit_status" 2>/dev/null)"; return 0; fi
  _pid=$(cat "$1/pid" 2>/dev/null)
  case "$_pid" in ''|*[!0-9]*) echo stopped; return 0;; esac
  _cmd=$(tr '\000' ' ' < "/proc/$_pid/cmdline" 2>/dev/null)
  _name=$(basename "$1")
  case "$_cmd" in
    *"%s"*"/runs/$_name/"*|*"/runs/$_name/"*"%s"*) echo "running $_pid";;
    *) echo stopped;;
  esac
}
""" % (RUN_MARK, RUN_MARK)


def parse(line: str) -> tuple[str, int | None]:
    """`run_state` output -> ('running'|'finished'|'failed'|'stopped'|'missing', exit code or pid)."""
    words = line.split()
    if not words or words[0] == "missing":
        return "missing", None
    if words[0] == "ended":
        code = int(words[1]) if len(words) > 1 and words[1].lstrip("-").isdigit() else None
        return ("finished" if code == 0 else "failed"), code
    if words[0] == "running":
        return "running", None
    return "stopped", None


def parse_pid(line: str) -> int | None:
    words = line.split()
    return int(words[1]) if len(words) == 2 and words[0] == "running" else None


def local_state(run_dir: str) -> tuple[str, int | None]:
    """The same rule on this machine (the watchdog, on the instance, asks about its own runs)."""
    r = subprocess.run(["sh", "-c", STATE_SH + 'run_state "$1"', "sh", str(run_dir)], capture_output=True,
                       text=True, timeout=30)
    return parse(r.stdout)
