"""`python -m deploy [--config F] check|offers|bid|up|sync|start|stop|status|logs|fetch|ssh|down|run|tensorboard|watch`.

Every command finds its target in `.deploy/` (written by `up`); the provider only
rents/finds the machine, everything after "it answers SSH" is shared code.
Exit codes: 0 success; 2 something to fix, as one line on stderr; 130 Ctrl-C;
`logs --follow` and `run` end with the run's own exit code when it failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from deploy import config as config_mod
from deploy.errors import UsageError
from deploy.host import host_text
from deploy.plan import report


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.print_usage(sys.stderr)
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m deploy",
                description="Train the violence detector on a GPU you rent on Vast.ai (provider vast) or on "
                            "an SSH host you already have (provider ssh): rent, sync, start, follow, fetch, "
                            "release. The usual order: check, up, sync, start, logs -f, fetch, down "
                            "(`run` does up to fetch in one go).",
                epilog="Exit codes: 0 done; 2 something to fix (one line on stderr); 130 Ctrl-C; "
                       "`logs --follow` and `run` end with the run's own exit code when it failed.")
    p.add_argument("--config", default=config_mod.DEFAULT_PATH, help="deploy config (default: %(default)s)")
    subparsers = p.add_subparsers(dest="command", required=True, parser_class=_Parser, title="verbs",
                                  metavar="VERB")

    class _Verbs:  # every verb takes --config too, after its name (`deploy check --config F`)
        @staticmethod
        def add_parser(name, **kw):
            kw.setdefault("description", kw.get("help"))  # `deploy VERB --help` says what VERB does
            s = subparsers.add_parser(name, **kw)
            s.add_argument("--config", default=argparse.SUPPRESS, help="deploy config (also before the verb)")
            return s

    sub = _Verbs()
    sub.add_parser("check", help="read-only preflight against the provider: rents nothing, costs nothing")
    s = sub.add_parser("offers", help="list machines the provider could rent, ranked by the whole job's cost")
    s.add_argument("--json", action="store_true", help="the ranked offers as one JSON array")
    s = sub.add_parser("bid", help="vast, interruptible: change the instance's bid ($/h per machine)")
    s.add_argument("price", type=float, help="the new bid in $/h per machine (see `offers` for the market)")
    s = sub.add_parser("up", help="rent or check the host and record it in .deploy/")
    s.add_argument("--dry-run", action="store_true", help="say what would be rented/used, change nothing")
    s = sub.add_parser("sync", help="send code and dataset (or feature cache) with rsync")
    s.add_argument("--bwlimit", type=int, metavar="KBPS", help="cap the upload rate (KiB/s), e.g. on a shared uplink")
    s.add_argument("--code-only", action="store_true", help="send only the code")
    s.add_argument("--delete-remote", action="store_true",
                   help="allow a sync that deletes most (or all) of the host's dataset")
    s = sub.add_parser("start", help="start the detached run (extract if needed, then train)")
    s.add_argument("--resume", action="store_true", help="continue the last run from its last checkpoint")
    s.add_argument("--name", help="run name (default: the UTC time)")
    s = sub.add_parser("stop", help="stop the run on the host (SIGTERM: it checkpoints, exits 143); destroys nothing")
    s.add_argument("--run", help="another run than the current one")
    s = sub.add_parser("status", help="run state, last epoch, the best model's epoch, GPUs, disk")
    s.add_argument("--json", action="store_true", help="one JSON object")
    s = sub.add_parser("logs", help="the run's train.log")
    s.add_argument("-f", "--follow", action="store_true", help="stream until the run ends (Ctrl-C only stops viewing)")
    s.add_argument("-n", "--lines", type=int, default=50, help="lines of history to show first (default: 50)")
    s.add_argument("--run", help="another run than the current one")
    s = sub.add_parser("fetch", help="bring results into runs/<run>/, SHA-256 verified")
    s.add_argument("--run", help="another run than the current one")
    s.add_argument("--max-size", default="8G", metavar="SIZE",
                   help="leave files larger than this on the host (default: %(default)s; e.g. 500M, 20G)")
    s.add_argument("--checkpoints", action="store_true",
                   help="also the per-epoch checkpoints and resume_state.json (to resume on another machine)")
    sub.add_parser("ssh", help="an interactive shell on the host, in the workspace")
    s = sub.add_parser("down", help="release the host (vast: destroy; ssh: forget)")
    s.add_argument("--force", action="store_true", help="even if results were not fetched")
    s = sub.add_parser("tensorboard", help="TensorBoard of the run on the host, forwarded to a local port over SSH")
    s.add_argument("--port", type=int, default=0, metavar="N", help="local port (default: any free one)")
    s.add_argument("--run", help="another run than the current one")
    s.add_argument("--all", action="store_true", help="every run on the host")
    s = sub.add_parser("watch", help="live view: epoch and ETA, metrics, GPUs, disk, $ spent")
    s.add_argument("--interval", type=float, default=5.0, metavar="S", help="seconds between refreshes (default: 5)")
    s.add_argument("--run", help="another run than the current one")
    s = sub.add_parser("run", help="up + sync + start + logs --follow + fetch")
    s.add_argument("--down", action="store_true", help="release the host after a successful fetch")
    s.add_argument("--dry-run", action="store_true", help="say what would be rented and run, change nothing")
    s.add_argument("--bwlimit", type=int, metavar="KBPS", help="cap sync's upload rate (KiB/s)")
    return p


class Context:
    """The config, the .deploy/ state, the provider, and a way to reach the recorded host."""

    def __init__(self, args):
        from deploy.local.state import State
        from deploy.providers import get_provider

        self.args = args
        self.config = config_mod.load(args.config)
        from deploy.local.lock import DeployLock

        self.state = State(".deploy")
        self.lock = DeployLock(".deploy")
        self.provider = get_provider(self.config, self.state)

    def remote(self, retry_for: float = 30):
        from deploy.host.remote import Remote

        host = self.provider.host()
        return Remote(host, self.state.known_hosts, self.config["ssh"]["connect_timeout"]).connect(
            retry_for=retry_for, retry_auth=getattr(self.provider, "retry_auth", False),
            refused_attempts=getattr(self.provider, "refused_attempts", None))

    def layout(self):
        from deploy.host.layout import Layout

        if not self.state.workspace:
            raise UsageError("no host recorded: run `python -m deploy up` (or `make deploy`) first")
        return Layout(self.state.workspace)


# -- commands ---------------------------------------------------------------------
def cmd_offers(ctx: Context) -> int:
    return ctx.provider.offers(as_json=getattr(ctx.args, "json", False)) or 0


def cmd_check(ctx: Context) -> int:
    from deploy.check import run_check

    return run_check(ctx.provider)


def cmd_bid(ctx: Context) -> int:
    if not hasattr(ctx.provider, "bid"):
        raise UsageError(f"provider '{ctx.provider.name}' rents nothing: there is no bid to change")
    ctx.provider.bid(ctx.args.price)
    return 0


def cmd_up(ctx: Context) -> int:
    from deploy import preflight
    from deploy.host import hostcheck

    preflight.require(ctx.config)  # train.args, train.config, the dataset, remote.python: before renting/connecting
    host = ctx.provider.up(dry_run=getattr(ctx.args, "dry_run", False))
    if getattr(ctx.args, "dry_run", False):
        return 0
    with ctx.remote(retry_for=ctx.config["ssh"]["retry_for"]) as remote:
        facts = hostcheck.probe(remote, ctx.config)
        report.probe_uplink(remote, ctx.state.root)  # the job model's uplink (deploy/plan/job_model.py)
    ctx.state.data.update(workspace=facts["workspace"], host_facts=facts)
    ctx.state.save()
    gpus = ", ".join(facts["gpus"]) or "no GPU visible (training will run on CPU)"
    free = "unknown" if facts["disk_free_gb"] is None else facts["disk_free_gb"]  # df said something else
    print(f"host {host.user}@{host.host}:{host.port} ready: Python {facts['python']}, {gpus}, "
          f"{free} GB free in {facts['workspace']}")
    return 0


def cmd_sync(ctx: Context) -> int:
    from deploy import preflight
    from deploy.sync import run_sync

    if not getattr(ctx.args, "code_only", False):
        preflight.require_dataset(ctx.config)  # the scan refuses a dataset the run would refuse: nothing sent
    ctx.provider.ensure_running()
    with ctx.remote() as remote:
        started = time.time()
        t = run_sync(remote, ctx.layout(), ctx.config, ctx.state, bwlimit=getattr(ctx.args, "bwlimit", None),
                     code_only=getattr(ctx.args, "code_only", False),
                     delete_remote=getattr(ctx.args, "delete_remote", False))
    if not getattr(ctx.args, "code_only", False):  # the upload phase of estimate vs actual
        report.record_sync(ctx.state.root, started, time.time(), t.bytes_sent,
                                (ctx.state.data.get("last_sync") or {}).get("source"))
    return 0


def cmd_start(ctx: Context) -> int:
    from deploy import preflight
    from deploy.start import start

    # what check refuses in train.args / train.config / remote.python (the dataset was scanned by sync)
    preflight.require(ctx.config, dataset=False)
    ctx.provider.ensure_running()
    ctx.provider.ensure_watchdog()  # provider vast: no run trains without a live cost watchdog
    with ctx.remote() as remote:
        start(remote, ctx.layout(), ctx.config, ctx.state, ctx.provider.remote_env(),
              resume=getattr(ctx.args, "resume", False), name=getattr(ctx.args, "name", None))
    return 0


def cmd_stop(ctx: Context) -> int:
    from deploy.stop import stop

    with ctx.remote() as remote:
        return stop(remote, ctx.layout(), ctx.state, getattr(ctx.args, "run", None))


def cmd_status(ctx: Context) -> int:
    from deploy.status import collect, render

    facts = ctx.provider.describe()
    if facts.pop("reachable", True) is False:  # a stopped (or outbid) instance: its provider facts are all there is
        render({"host": "not running (`make fetch` starts it again)", "run": ctx.state.current_run,
                "state": "unknown while the host is stopped", "provider_facts": facts}, as_json=ctx.args.json)
        return 0
    with ctx.remote() as remote:
        info = collect(remote, ctx.layout(), ctx.state, facts)
        info["estimate_vs_actual"] = report.status_lines(remote, ctx.layout(), ctx.state)
    lines = info["estimate_vs_actual"] if ctx.args.json else info.pop("estimate_vs_actual")
    render(info, as_json=ctx.args.json)
    if lines and not ctx.args.json:
        print("\n".join(lines))
    return 0


def cmd_logs(ctx: Context) -> int:
    from deploy import logs

    run, lines = getattr(ctx.args, "run", None), getattr(ctx.args, "lines", 50)
    with ctx.remote() as remote:
        if getattr(ctx.args, "follow", False):
            try:
                return logs.follow(remote, ctx.layout(), ctx.state, run, lines)
            except KeyboardInterrupt:
                print("\n-- stopped following; the run keeps going on the host (`make logs` to follow again)",
                      file=sys.stderr)
                return 130
        return logs.show(remote, ctx.layout(), ctx.state, run, lines)


def cmd_fetch(ctx: Context) -> int:
    from deploy.fetch import fetch
    from deploy.fetch_names import DEFAULT_MAX_SIZE, parse_size

    max_size = parse_size(ctx.args.max_size) if getattr(ctx.args, "max_size", None) else DEFAULT_MAX_SIZE
    ctx.provider.ensure_running()
    with ctx.remote() as remote:
        result = fetch(remote, ctx.layout(), ctx.state, getattr(ctx.args, "run", None), max_size=max_size,
                       checkpoints=getattr(ctx.args, "checkpoints", False))
    lines = report.fetch_lines(Path(result["dest"]), ctx.state) if result["run"] == ctx.state.current_run else []
    if lines:
        print("\n".join(lines))
    return 0


def cmd_ssh(ctx: Context) -> int:
    from deploy.host.remote import Remote, rpath

    remote = Remote(ctx.provider.host(), ctx.state.known_hosts, ctx.config["ssh"]["connect_timeout"])
    ws = ctx.state.workspace or ctx.config["remote"]["workspace"]
    argv = remote.ssh_argv(interactive=True) + ["-t", remote.target, f"cd {rpath(ws)} && exec \"$SHELL\" -l"]
    sys.stdout.flush()
    os.execvp(argv[0], argv)
    return 0  # not reached


def cmd_down(ctx: Context) -> int:
    if ctx.provider.name == "vast" and (ctx.state.data.get("vast") or {}).get("instance_id") is None:
        try:
            ctx.provider.api.sdk  # noqa: B018  (with a key, Vast.ai is asked for instances with our label)
        except UsageError as exc:
            print(f"nothing is recorded as rented for this project, so nothing was destroyed; Vast.ai was not asked "
                  f"for an instance labelled {ctx.provider.label} that a crash left unrecorded ({exc})")
            return 0
    ctx.provider.down(force=getattr(ctx.args, "force", False))
    return 0


def cmd_tensorboard(ctx: Context) -> int:
    from deploy import tensorboard
    from deploy.watch import running_host_facts

    running_host_facts(ctx.provider)
    return tensorboard.serve(lambda retry_for: ctx.remote(retry_for=retry_for), ctx.layout(), ctx.config,
                             ctx.state, run=ctx.args.run, all_runs=ctx.args.all, port=ctx.args.port)


def cmd_watch(ctx: Context) -> int:
    from deploy import watch

    return watch.watch(ctx, run=ctx.args.run, interval=ctx.args.interval)


def cmd_run(ctx: Context) -> int:
    if getattr(ctx.args, "dry_run", False):
        return cmd_up(ctx)  # the provider prints the plan; nothing is rented or started
    for step in ("up", "sync", "start"):
        COMMANDS[step](ctx)
    ctx.args.follow, ctx.args.lines, ctx.args.run = True, 50, None
    code = cmd_logs(ctx)
    if code == 130:
        return code
    COMMANDS["fetch"](ctx)  # a failed run's log and partial results are worth having too
    if code != 0:
        raise UsageError(f"run {ctx.state.current_run} failed with exit code {code}; its log is in "
                         f"runs/{ctx.state.current_run}/train.log")
    if ctx.args.down:
        COMMANDS["down"](ctx)
    return 0


def locked(command):
    """Hold .deploy/lock around a command that changes state or rents (see deploy/local/lock.py), and read
    the state again once it is held: what another command wrote meanwhile is what counts."""
    def wrapper(ctx: Context) -> int:
        fresh = ctx.lock._fd is None
        with ctx.lock:
            if fresh:
                ctx.state.reload()
            return command(ctx)
    return wrapper


# check, offers, status, logs, ssh, tensorboard and watch only read: no lock, so they work while
# a long sync or fetch holds it
COMMANDS = {"check": cmd_check, "bid": locked(cmd_bid), "offers": cmd_offers, "up": locked(cmd_up),
            "sync": locked(cmd_sync), "start": locked(cmd_start), "stop": locked(cmd_stop), "status": cmd_status,
            "logs": cmd_logs, "fetch": locked(cmd_fetch), "ssh": cmd_ssh, "down": locked(cmd_down), "run": cmd_run,
            "tensorboard": cmd_tensorboard, "watch": cmd_watch}


# Commands that act on the host .deploy/ records. After ssh.host changed in the config, the ones that
# would put work there refuse; the ones that look or fetch say which host they use (where the runs are).
HOST_CHANGE_REFUSED = ("sync", "start")
HOST_CHANGE_NOTED = ("status", "ssh", "logs", "fetch", "stop", "watch", "tensorboard")


def notice_host_change(ctx: Context) -> None:
    change = ctx.state.host_change(ctx.config)
    if change is None or ctx.args.command not in HOST_CHANGE_REFUSED + HOST_CHANGE_NOTED:
        return
    configured, recorded, since = change
    if ctx.args.command in HOST_CHANGE_REFUSED:
        raise UsageError(f"ssh.host changed: the deploy config says {configured} but .deploy/ records {recorded} "
                         f"(from `up` {since}): run `python -m deploy up` to switch to {configured} (runs on "
                         f"{recorded} stay there), or set ssh back to {recorded}")
    print(f"note: the deploy config now says {configured}, but this uses {recorded}, the host recorded by `up` "
          f"{since}, where the runs are; `python -m deploy up` switches to {configured}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        ctx = Context(args)
        notice_host_change(ctx)
        return COMMANDS[args.command](ctx) or 0
    except UsageError as exc:  # may quote the host's words: never its control characters (host_text.py)
        print(f"error: {host_text.clean(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted (the run on the host, if any, keeps going)", file=sys.stderr)
        return 130
    except Exception as exc:  # a service failing (an HTTP 5xx from the Vast.ai API): one line, not a traceback
        response = getattr(exc, "response", None)
        if response is None or not hasattr(response, "status_code"):
            raise
        url = str(response.url).split("?", 1)[0]  # a query string could carry a credential: never printed
        print(f"error: {response.request.method if response.request else 'request'} {url} failed with "
              f"HTTP {response.status_code} ({(response.reason or '').strip() or 'no reason given'}): the service "
              f"is failing, not your setup; nothing more was changed - run the same command again in a minute",
              file=sys.stderr)
        return 2
