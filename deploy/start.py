"""`start`: the detached run on the host — extract (skipped when the cache is current), then train.

The run is a small sh script, <workspace>/runs/<run>/run.sh, started with
`setsid nohup` so that it belongs to no SSH session: a dropped connection, a closed
laptop or a `logs` interrupted with Ctrl-C never touch it. (setsid rather than tmux:
it exists on every Linux host, and nobody needs to attach to a non-interactive job.)
The script writes, in the run folder:

    pid           the script's process id, while it runs
    train.log     everything the run prints (the trainer also tees its own output here)
    console.log   the train stage's raw stdout/stderr (tracebacks, native library noise)
    exit_status   the exit code, written atomically when the run ends

A run is "running" while its pid is alive and exit_status is absent; `start` refuses a
second run then. `--resume` re-runs the last run's folder with `train --resume`.
"""

from __future__ import annotations

import shlex
import time

from deploy.errors import UsageError
from deploy.host.layout import Layout
from deploy.host.remote import Remote, q, rpath
from deploy.host.shipped.runstate import RUN_MARK, STATE_SH



_FIND_PACKAGES = ("import importlib.util as u; print(' '.join(m for m in ('tensorflow', 'keras', 'cv2', 'numpy', "
                  "'yaml', 'sklearn', 'matplotlib') if u.find_spec(m) is None))")


def new_run_name() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime())


def running_runs_script(layout: Layout) -> str:
    """sh: print the names of runs that are alive on the host (deploy/host/shipped/runstate.py decides)."""
    return STATE_SH + f"""
for d in {rpath(layout.runs)}/*/; do
  d=${{d%/}}
  case "$(run_state "$d")" in running*) basename "$d";; esac
done
"""



def run_script(layout: Layout, config: dict, run: str, resume: bool, skip_extract: bool, env: dict) -> str:
    py = q(layout.python(config))
    cfg = q(layout.train_config(config))
    run_dir = rpath(layout.run_dir(run))
    train_args = " ".join(q(a) for a in config["train"]["args"])
    exports = "".join(f"export {k}={q(str(v))}\n" for k, v in env.items() if k.isidentifier())
    extract = "echo '[deploy] the run trains from the synced feature cache: no extract'"
    if not skip_extract:
        # The trainer's extract is itself incremental, but it still hashes every video and
        # loads the backbone; a fingerprint of the dataset listing and the config skips it
        # outright when nothing changed since the last complete extraction.
        extract = f"""if [ -d ../dataset ]; then
  fp=$( {{ find ../dataset -type f ! -path '*/.rsync-partial/*' ! -name '.deploy-source.json' -printf '%P %s %T@\\n' | LC_ALL=C sort; cat {cfg}; }} | sha256sum | cut -c1-64 )
  if [ "$(cat ../cache/.deploy-extracted 2>/dev/null)" = "$fp" ]; then
    echo "[deploy] the feature cache is complete for this dataset and config: extract skipped"
  else
    echo "[deploy] $(date -u +%FT%T.%NZ) extract"
    {py} -m trainer extract --dataset-path ../dataset --cache-dir ../cache --config {cfg} || finish $?
    mkdir -p ../cache && printf '%s\\n' "$fp" > ../cache/.deploy-extracted
  fi
else
  echo "[deploy] no dataset on the host: training from the existing feature cache"
fi"""
    resume_flag = " --resume" if resume else ""
    return f"""#!/bin/sh
# {RUN_MARK}: written by `python -m deploy start`; safe to re-run by hand.
run_dir={run_dir}
# Started by hand (`sh run.sh`)? Re-execute as `start` launches it, so that the command line
# carries the marker and this folder, which is how every liveness check (runstate.py) knows it.
if [ "$1" != {RUN_MARK} ] || [ "${{0#"$run_dir"/}}" = "$0" ]; then exec sh "$run_dir/$(basename "$0")" {RUN_MARK}; fi
cd "$run_dir" || exit 1
echo $$ > pid
rm -f exit_status
exec >> train.log 2>&1 < /dev/null
finish() {{
  code=$1
  if [ "$code" != 0 ] && [ -s "$run_dir/console.log" ]; then
    echo "[deploy] last lines of console.log (the failed command's stderr):"
    tail -n 20 "$run_dir/console.log"
  fi
  echo "[deploy] $(date -u +%FT%T.%NZ) run ended with exit code $code"
  printf '%s\\n' "$code" > "$run_dir/exit_status.tmp" && mv "$run_dir/exit_status.tmp" "$run_dir/exit_status"
  exit "$code"
}}
trap 'finish 143' TERM
trap 'finish 130' INT
# the instance's own API key (Vast.ai puts it in every container) is the watchdog's, not the trainer's
unset CONTAINER_API_KEY VAST_API_KEY
{exports}export PYTHONPATH={rpath(layout.app)}
export PYTHONUNBUFFERED=1
cd {rpath(layout.app)} || finish 1
echo "[deploy] $(date -u +%FT%T.%NZ) run {shlex.quote(run)} on $(uname -n)"
{extract}
echo "[deploy] $(date -u +%FT%T.%NZ) train"
# the trainer tees its own output into train.log; its raw streams go to console.log
{py} -m trainer train --cache-dir ../cache --output-dir "$run_dir" --config {cfg} {train_args}{resume_flag} \\
  >> "$run_dir/console.log" 2>&1
finish $?
"""


def start(remote: Remote, layout: Layout, config: dict, state, env: dict, resume: bool = False,
          name: str | None = None) -> str:
    run = name or (state.current_run if resume else new_run_name())
    if resume and not run:
        raise UsageError("no previous run to resume: use `start` without --resume")
    state.check_run_target(run)  # the same name on another host would mix two runs in runs/<run>/ here
    py = layout.python(config)
    run_dir = rpath(layout.run_dir(run))
    # One round trip for every precondition (each SSH command costs a login-shell start).
    checks = remote.run(f"""
echo "running=$({{ {running_runs_script(layout)} }} | tr '\\n' ' ')"
test -e {run_dir} && echo exists=1
cd {rpath(layout.app)} 2>/dev/null && test -d trainer && command -v {q(py)} >/dev/null 2>&1 && echo code=1 \
  && echo "missing=$({q(py)} -c {q(_FIND_PACKAGES)})"
""").stdout
    facts = dict(line.partition("=")[::2] for line in checks.splitlines() if "=" in line)
    running = facts.get("running", "").split()
    if running:
        raise UsageError(f"run {running[0]} is still running on {remote.host.host}: follow it with `make logs`, "
                         f"or wait for it to end before starting another")
    if resume and not facts.get("exists"):
        raise UsageError(f"run {run} does not exist on {remote.host.host}: nothing to resume")
    if not resume and facts.get("exists"):
        raise UsageError(f"run {run} already exists on the host: pick another --name or use --resume")
    if not facts.get("code"):
        raise UsageError(f"the host has no synced code or no interpreter {py}: run `python -m deploy sync` first")
    # find_spec, not import: knowing TensorFlow is there costs milliseconds, importing it seconds
    missing = facts.get("missing", "").split()
    if missing:
        raise UsageError(f"{py} on {remote.host.host} lacks {', '.join(missing)}: use the project's image, "
                         f"set remote.python to an interpreter that has them, or `remote.python: auto-venv`")
    skip_extract = (state.data.get("last_sync") or {}).get("source") == "cache"
    script = run_script(layout, config, run, resume, skip_extract, env)
    # write run.sh from stdin, then launch it; setsid: a new session, no controlling terminal,
    # not a child of this SSH session
    launch = (f"mkdir -p {run_dir} && cat > {run_dir}/run.sh && cd {run_dir} && rm -f pid && "
              f"{{ setsid nohup sh {run_dir}/run.sh {RUN_MARK} > /dev/null 2>&1 < /dev/null & }} && "
              f"i=0; while [ ! -s {run_dir}/pid ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; "
              f"cat {run_dir}/pid")
    pid = remote.check(launch, "starting the run", stdin=script).strip()
    if not pid:
        raise UsageError(f"the run did not start on {remote.host.host}: look at {layout.run_dir(run)}/train.log")
    state.record_start(run, resume=resume)
    print(f"run {run} {'resumed' if resume else 'started'} on {remote.host.host} (pid {pid}); "
          f"log: {layout.run_dir(run)}/train.log")
    return run
