"""`watch`: a live view of the run, refreshed every few seconds, until Ctrl-C.

Epoch and ETA (the trainer's own epoch line in train.log), the last metrics, the run's
state and the best model's epoch (status.collect, the same figures as `status`), per-GPU
use (gpu_stats: nvidia-smi on the host), disk free, and the money spent so far (the
provider's describe(): what Vast.ai bills so far, through cost.billed; asked
once a minute, not every refresh, because it is an API call).

In a terminal the view is a rich Live table redrawn in place; when stdout is not a
terminal (a pipe, a file, CI) each refresh prints the same rows as plain lines under a
`-- HH:MM:SS` header. A dropped link is retried for two minutes; Ctrl-C or SIGTERM only
stops the viewing: the run is detached on the host and is never touched.
"""

from __future__ import annotations

import re
import signal
import sys
import time
import types

from deploy import status
from deploy.errors import UsageError
from deploy.host import gpu_stats, host_text
from deploy.host.remote import rpath

RECONNECT_FOR = 120
DESCRIBE_EVERY = 60  # seconds between provider API calls for the money figures
# the line trainer/callbacks.py EpochProgress prints at the end of every epoch:
#   epoch   3/20  loss 0.6931  accuracy 0.5000  val_loss ...  lr 1.00e-03  1,234 samples/s  2s  ETA 34s
EPOCH_LINE = re.compile(r"epoch\s+(?P<epoch>\d+)/(?P<epochs>\d+)\s+(?P<rest>.*)$")
_METRIC = re.compile(r"\b(loss|accuracy|val_loss|val_accuracy|lr)\s+(-?[\d.]+(?:e[-+]?\d+)?)\b")
_SPEED = re.compile(r"([\d,.]+) samples/s\s+(\S+)")
_ETA = re.compile(r"ETA\s+(\S+)")


def parse_epoch_line(line: str) -> dict | None:
    """The trainer's epoch line -> {epoch, epochs, metrics: {name: text}, speed, took, eta}."""
    m = EPOCH_LINE.search(line or "")
    if not m:
        return None
    rest = m.group("rest")
    speed, eta = _SPEED.search(rest), _ETA.search(rest)
    return {"epoch": int(m.group("epoch")), "epochs": int(m.group("epochs")),
            "metrics": dict(_METRIC.findall(rest)),
            "speed": speed.group(1) if speed else None, "took": speed.group(2) if speed else None,
            "eta": eta.group(1) if eta else None}


def extra_script(run_dir: str | None) -> str:
    """sh: the last epoch line (bounded: only the log's last MB is searched); status.collect has the rest."""
    epoch = (f"tail -c 1000000 {rpath(run_dir)}/train.log 2>/dev/null | grep -E 'epoch +[0-9]+/[0-9]+' | tail -n 1"
             if run_dir else "true")
    return f"echo @@epoch; {epoch}\n"


def sections(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("@@"):
            current = out.setdefault(line[2:], [])
        elif current is not None:
            current.append(line)
    return out


def snapshot(remote, layout, state, run: str | None) -> dict:
    """Everything one refresh shows (three SSH round trips: status.collect's two and ours)."""
    run = run or state.current_run
    view = types.SimpleNamespace(current_run=run, runs=state.runs)  # collect() reads only these two
    info = status.collect(remote, layout, view, {})  # GPUs (gpu_stats), disk, history, log tail, watchdog
    extra = sections(remote.run(extra_script(layout.run_dir(run) if run else None)).stdout)
    info["epoch_line"] = (extra.get("epoch") or [""])[-1].strip()
    info["epoch_info"] = parse_epoch_line(info["epoch_line"])
    return info


def money(facts: dict) -> str:
    if "spent" in facts:
        line = f"{facts['spent']} so far"
        if facts.get("price_per_hour"):  # the provider's own words, "/h" included
            line += f" at {facts['price_per_hour']}"
        if facts.get("projected_total"):
            line += f", {facts['projected_total']} projected"
        return line
    return "nothing billed (not a rented instance)"


def rows(info: dict, facts: dict) -> list[tuple[str, str]]:
    """The view as (label, text) rows; the terminal and the plain output print the same rows, each one
    line of text with no control character of the host's (deploy/host/host_text.py)."""
    out = [("host", f"{info['host']}  provider {facts.get('provider', '?')}")]
    state = info.get("state", "")
    if info.get("exit_code") is not None:
        state += f" (exit code {info['exit_code']})"
    out.append(("run", f"{info.get('run') or '-'}  {state}"))
    ep = info.get("epoch_info")
    if ep:
        pct = 100 * ep["epoch"] / ep["epochs"] if ep["epochs"] else 0
        line = f"{ep['epoch']}/{ep['epochs']} ({pct:.0f}%)  ETA {ep['eta'] or '?'}"
        if ep["took"]:
            line += f"  ({ep['took']}/epoch, {ep['speed']} samples/s)"
        out.append(("epoch", line))
        if ep["metrics"]:
            out.append(("metrics", "  ".join(f"{k} {v}" for k, v in ep["metrics"].items())))
    elif info.get("run"):
        out.append(("epoch", "none finished yet"))
    if "best_model" in info:
        out.append(("best model", status.describe_best(info)))
    for g in info.get("gpus", []):
        out.append((f"gpu {g['index']}", f"{g['name']}  {gpu_stats.describe(g)}"))
    if info.get("no_gpu"):
        out.append(("gpu", info["no_gpu"]))
    if "disk_free_gb" in info:
        out.append(("disk free", f"{info['disk_free_gb']} GB of {info['disk_total_gb']} GB"))
    for section, why in (info.get("unreadable") or {}).items():
        out.append((section, f"unreadable: the host's answer is not what it should be ({why})"))
    if (info.get("watchdog") or {}).get("unreadable"):
        out.append(("watchdog", f"unreadable ({info['watchdog']['unreadable']})"))
    out.append(("spent", money(facts)))
    last = next((ln.strip() for ln in reversed(info.get("log_tail", [])) if ln.strip()), "")
    if last and not parse_epoch_line(last):  # an epoch line is already the epoch row
        out.append(("log", last[-160:]))
    return [(host_text.one_line(label), host_text.one_line(text)) for label, text in out]


class _Plain:
    """Not a terminal: each refresh as plain lines (no escape codes), flushed."""

    def __init__(self, interval: float):
        self.interval = interval

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def show(self, table_rows: list[tuple[str, str]], note: str = "") -> None:
        lines = [f"-- {time.strftime('%H:%M:%S')}" + (f"  {note}" if note else "")]
        lines += [f"{label:<18} {text}" for label, text in table_rows]
        print("\n".join(lines), flush=True)


class _Live:
    """A terminal: one rich table redrawn in place."""

    COLORS = {"running": "yellow", "finished": "green", "failed": "red", "stopped": "red"}

    def __init__(self, interval: float, console):
        from rich.live import Live

        self.interval = interval
        self.live = Live(console=console, auto_refresh=False, transient=False)

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        return self.live.__exit__(*exc)

    def show(self, table_rows: list[tuple[str, str]], note: str = "") -> None:
        from rich.markup import escape
        from rich.table import Table

        caption = "  ".join(part for part in (time.strftime("%H:%M:%S"), f"every {self.interval:g} s", note,
                                              "Ctrl-C stops watching (the run keeps going)") if part)
        t = Table(show_header=False, box=None, pad_edge=False, caption=caption, caption_justify="left")
        t.add_column(style="bold", no_wrap=True)
        t.add_column()
        for label, text in table_rows:
            text = escape(text)
            if label == "run":
                for word, color in self.COLORS.items():
                    text = text.replace(f"  {word}", f"  [{color}]{word}[/{color}]", 1)
            t.add_row(label, text)
        self.live.update(t, refresh=True)


def _stop_on_sigterm(*_):
    raise KeyboardInterrupt


def running_host_facts(provider) -> dict:
    """The provider's facts, or one line when its machine is not running: watching (or TensorBoard)
    never starts a stopped instance, because that would start its billing again."""
    facts = provider.describe()
    if facts.pop("reachable", True) is False:
        raise UsageError(f"the host is not running ({facts.get('status', 'stopped')}): `make fetch` starts it "
                         f"again (watch and tensorboard never do: a running instance is billed)")
    return facts


def watch(ctx, run: str | None = None, interval: float = 5.0) -> int:
    """Refresh until Ctrl-C / SIGTERM; `ctx` is the cli Context (config, state, provider, remote())."""
    from rich.console import Console

    if interval <= 0:
        raise UsageError("--interval must be a positive number of seconds")
    layout = ctx.layout()
    facts = running_host_facts(ctx.provider)
    described = time.monotonic()
    console = Console()
    view = _Live(interval, console) if console.is_terminal else _Plain(interval)
    old_handler = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    remote = None
    try:
        remote = ctx.remote()
        with view:
            note = ""
            while True:
                try:
                    info = snapshot(remote, layout, ctx.state, run)
                except UsageError:
                    transport = remote.conn.transport if remote.conn else None
                    if transport is not None and transport.is_active():
                        raise
                    view.show([("host", f"connection to {remote.host.host} lost; reconnecting "
                                        f"(the run goes on)")])
                    remote.close()
                    remote.connect(retry_for=RECONNECT_FOR, quiet=True)
                    note = "reconnected"
                    continue
                if time.monotonic() - described > DESCRIBE_EVERY:
                    try:
                        facts = ctx.provider.describe()
                        facts.pop("reachable", None)
                        described = time.monotonic()
                    except Exception:  # noqa: BLE001  (the provider API failing must not end the view)
                        pass  # the last figures stay on screen; the next minute tries again
                view.show(rows(info, facts), note)
                note = ""
                time.sleep(interval)
    except KeyboardInterrupt:
        print("-- stopped watching; the run keeps going on the host", file=sys.stderr)
        return 0
    finally:
        if remote is not None:
            remote.close()
        signal.signal(signal.SIGTERM, old_handler)
