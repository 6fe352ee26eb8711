"""`status`: one look at the host and the run — state, last epoch, the best model's epoch, GPUs, disk.

Everything comes from one remote command (sections separated by marker lines) so a
status costs one round trip; the table is drawn with rich. Every section is the host's
word: one that does not parse (an nvidia-smi field over the csv module's 128 KiB limit, a
`df` that prints words, a watchdog status file with a non-number in it) is shown as
unreadable, and all host text is drawn through deploy/host/host_text.py.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time

from deploy.host import gpu_stats, host_text
from deploy.host.layout import Layout
from deploy.host.remote import Remote, rpath
from deploy.logs import run_state

# what a section of the host's answer may raise when it is not what the command prints
_PARSE_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError, csv.Error)


def read_section(info: dict, section: str, parse, default=None):
    """parse() of one section of the host's answer; one it cannot read is recorded as unreadable."""
    try:
        return parse()
    except _PARSE_ERRORS as exc:
        kind = "CSV" if isinstance(exc, csv.Error) else type(exc).__name__
        info.setdefault("unreadable", {})[section] = host_text.one_line(f"{kind}: {exc}")[:160]
        return default


def _disk(lines: list[str]) -> tuple[float, float] | None:
    words = (lines or [""])[0].split()
    if not words:
        return None
    if len(words) != 2 or not all(w.isdigit() for w in words):
        raise ValueError(f"df printed {' '.join(words)[:60]!r}, not two numbers")
    return round(int(words[0]) / 1024**2, 1), round(int(words[1]) / 1024**2, 1)


def collect(remote: Remote, layout: Layout, state, provider_facts: dict) -> dict:
    run = state.current_run
    info: dict = {"host": f"{remote.host.user}@{remote.host.host}:{remote.host.port}",
                  "workspace": layout.workspace, "run": run, "provider_facts": provider_facts}
    script = f"""
echo @@disk; df -Pk {rpath(layout.workspace)} 2>/dev/null | awk 'NR==2{{print $4, $2}}'
echo @@gpu; {gpu_stats.SCRIPT}
echo @@history; {"cat " + rpath(layout.run_dir(run)) + "/training_history.csv 2>/dev/null" if run else "true"}
echo @@log; {"tail -n 3 " + rpath(layout.run_dir(run)) + "/train.log 2>/dev/null" if run else "true"}
{watchdog_script(layout)}"""
    sections: dict[str, list[str]] = {}
    current = None
    for line in remote.run(script).stdout.splitlines():
        if line.startswith("@@"):
            current = sections.setdefault(line[2:], [])
        elif current is not None:
            current.append(line)

    disk = read_section(info, "disk", lambda: _disk(sections.get("disk")))
    if disk:
        info["disk_free_gb"], info["disk_total_gb"] = disk
    gpu_text = "\n".join(sections.get("gpu", []))
    info["gpus"] = read_section(info, "gpu", lambda: gpu_stats.parse(gpu_text), default=[])
    if not info["gpus"] and "gpu" not in info.get("unreadable", {}):
        info["no_gpu"] = gpu_stats.no_gpu_reason(gpu_text)
    if run:
        status, code = run_state(remote, layout.run_dir(run))
        info.update(state=status, exit_code=code)
        history = read_section(info, "history", lambda: list(csv.DictReader(
            io.StringIO("\n".join(sections.get("history", []))))), default=[])
        if history:
            info["last_epoch"] = history[-1]
            info["epochs_done"] = len(history)
            best = read_section(info, "history", lambda: best_model_epoch(history))
            if best:
                info["best_model"] = best
        info["log_tail"] = sections.get("log", [])
        fetched = state.runs.get(run, {})
        info["last_fetch_at"] = fetched.get("last_fetch_at")
    else:
        info["state"] = "no run started"
    if "watchdog" in sections:
        info["watchdog"] = read_section(info, "watchdog", lambda: watchdog_info(sections))
    return info


def best_model_epoch(history: list[dict]) -> dict | None:
    """The epoch best_model.keras holds: the first lowest val_loss, as the trainer's Keras
    checkpoint (mode min, strict improvement) picks it. Epochs count from 1 like checkpoint files."""
    rows = [(float(r["val_loss"]), n, r) for n, r in enumerate(history, 1) if _is_float(r.get("val_loss"))]
    if not rows:
        return None
    loss, n, row = min(rows, key=lambda t: (t[0], t[1]))
    best = {"epoch": n, "val_loss": loss}
    if _is_float(row.get("val_accuracy")):
        best["val_accuracy"] = float(row["val_accuracy"])
    return best


def describe_best(info: dict) -> str:
    b = info["best_model"]
    text = f"epoch {b['epoch']} of {info['epochs_done']}  val_loss={b['val_loss']:.4f}"
    return text + (f"  val_accuracy={b['val_accuracy']:.4f}" if "val_accuracy" in b else "")


# -- the on-instance watchdog (provider vast): is it alive, and what will it do? -----------------
def watchdog_script(layout: Layout) -> str:
    """sh: the watchdog's status.json, stopped.json, whether its pid is alive, its log's last lines."""
    wd = rpath(layout.workspace + "/.watchdog")
    return f"""if [ -d {wd} ]; then
echo @@watchdog; pid=$(cat {wd}/watchdog.pid 2>/dev/null || sed -n 's/^ *"pid": *\\([0-9]*\\).*/\\1/p' {wd}/status.json 2>/dev/null)
case "$pid" in ''|*[!0-9]*) echo alive=0;; *) tr '\\000' ' ' < /proc/$pid/cmdline 2>/dev/null | grep -q watchdog.py \\
  && echo "alive=$pid" || echo alive=0;; esac
echo @@wd_status; cat {wd}/status.json 2>/dev/null; echo  # JSON files end without a newline
echo @@wd_stopped; cat {wd}/stopped.json 2>/dev/null; echo
echo @@wd_log; tail -n 3 {wd}/watchdog.log 2>/dev/null
fi
"""


def _json(lines: list[str]) -> dict:
    try:
        value = json.loads("\n".join(lines) or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _number(value) -> float | None:
    """A finite number (the watchdog's times), else None: the file is the host's, not ours."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) else None


def _checked_status(st: dict) -> tuple[dict, list[str]]:
    """The watchdog's status.json with every field we use of the type we use it as; what was not."""
    bad = []
    if "at" in st and _number(st["at"]) is None:
        bad.append("'at' is not a number")
    will = st.get("will_stop")
    if will is not None and not (isinstance(will, dict) and isinstance(will.get("rule"), str)
                                 and _number(will.get("at")) is not None):
        bad.append("'will_stop' is not a rule and a time")
        will = None
    names = [a for a in (st.get("activity"), st.get("training")) if a is not None]
    if not all(isinstance(a, list) and all(isinstance(x, str) for x in a) for a in names):
        bad.append("'activity' is not a list of names")
        names = []
    last = st.get("last_stop_attempt")
    if last is not None and not isinstance(last, dict):
        bad.append("'last_stop_attempt' is not a record")
        last = None
    api = st.get("api")
    if api is not None and not isinstance(api, dict):
        bad.append("'api' is not a record")
        api = None
    return {"at": _number(st.get("at")), "will_stop": will, "activity": [x for a in names for x in a],
            "last_stop_attempt": last, "api": api}, bad


def watchdog_info(sections: dict, now: float | None = None) -> dict:
    now = time.time() if now is None else now
    alive = next((ln.split("=", 1)[1] for ln in sections.get("watchdog", []) if ln.startswith("alive=")), "0")
    alive = alive if alive.isdigit() else "0"
    st, bad = _checked_status(_json(sections.get("wd_status", [])))
    stopped = _json(sections.get("wd_stopped", []))
    out = {"running": alive != "0", "pid": int(alive) if alive != "0" else None,
           "last_tick_at": st["at"], "last_tick_age_s": round(now - st["at"]) if st["at"] else None,
           "will_stop": st["will_stop"], "activity": st["activity"],
           "last_stop_attempt": st["last_stop_attempt"] or (stopped or None),
           "api": st["api"],
           "log_tail": sections.get("wd_log", [])}
    if bad:
        out["unreadable"] = "its status file: " + "; ".join(bad)
    return out


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def render_watchdog(wd: dict, add_row, escape) -> None:
    tick = f"last look {_ago(wd['last_tick_age_s'])} ago" if wd.get("last_tick_age_s") is not None else "never looked"
    if wd["running"]:
        add_row("watchdog", f"[green]running[/green] (pid {wd['pid']}), {tick}")
    else:
        add_row("watchdog", f"[red]NOT running[/red] ({tick}): the cost guards are off; `python -m deploy up` "
                            f"restarts it, or `make destroy` when done")
    will = wd.get("will_stop")
    if will:
        unless = " unless something happens" if will["rule"] == "idle_grace_minutes" else ""
        add_row("watchdog stops it", escape(f"{will['rule']}: in {_ago(will['at'] - time.time())}{unless}"))
    elif wd["running"]:
        add_row("watchdog stops it", escape(f"not while {', '.join(wd.get('activity') or ['work'])} goes on"))
    if wd.get("unreadable"):
        add_row("watchdog status", escape(f"unreadable ({wd['unreadable']})"))
    last = wd.get("last_stop_attempt")
    if last:
        at = _number(last.get("at"))
        when = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(at)) if at else "?"
        add_row("last stop attempt", escape(f"{when}: {last.get('result', 'stopped')} ({last.get('reason', '')})"))
    api = wd.get("api") or {}
    if api.get("ok") is False:  # e.g. a 401: the instance key refused; the watchdog keeps retrying
        add_row("watchdog API", "[red]" + escape(f"{api.get('what', 'call')} failed: {str(api.get('error'))[:200]}")
                + "[/red]" + (escape(f"; next try in {_ago(api['retry_at'] - time.time())}")
                              if _is_float(api.get("retry_at")) else ""))
    for line in wd.get("log_tail", [])[-1:]:
        add_row("watchdog log", escape(line[-160:]))


def _is_float(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def render(info: dict, as_json: bool = False) -> None:
    if as_json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return
    from rich.console import Console
    from rich.markup import escape as escape_markup
    from rich.table import Table

    def escape(text) -> str:  # a cell of the host's text: one line, no control character, no rich markup
        return escape_markup(host_text.one_line(str(text)))

    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    state = info.get("state", "")
    color = {"running": "yellow", "finished": "green", "failed": "red", "stopped": "red"}.get(state, "white")
    if info.get("exit_code") is not None:
        state += f" (exit code {info['exit_code']})"
    t.add_row("host", escape(info["host"]))
    t.add_row("run", f"{info.get('run') or '-'}  [{color}]{state}[/{color}]")
    last = info.get("last_epoch")
    if last:
        keys = [k for k in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate") if k in last]
        t.add_row("last epoch", escape("  ".join(f"{k}={_fmt(last[k])}" for k in keys)))
    if "best_model" in info:
        t.add_row("best model", escape(describe_best(info)))
    for g in info.get("gpus", []):
        t.add_row(escape(f"gpu {g['index']}"), escape(f"{g['name']}  {gpu_stats.describe(g)}"))
    if not info.get("gpus") and info.get("no_gpu"):
        t.add_row("gpu", escape(info["no_gpu"]))
    if "disk_free_gb" in info:
        t.add_row("disk free", escape(f"{info['disk_free_gb']} GB of {info['disk_total_gb']} GB in "
                                      f"{info['workspace']}"))
    for section, why in (info.get("unreadable") or {}).items():
        t.add_row(escape(section), escape(f"unreadable: the host's answer is not what it should be ({why})"))
    for k, v in (info.get("provider_facts") or {}).items():
        t.add_row(escape(str(k)), escape(str(v)))
    if info.get("run"):
        t.add_row("last fetch", info.get("last_fetch_at") or "never")
    if info.get("watchdog"):
        render_watchdog(info["watchdog"], t.add_row, escape)
    for line in info.get("log_tail", []):
        t.add_row("log", escape(line[-160:]))
    Console().print(t)


def _fmt(v: str) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return str(int(f)) if f.is_integer() and abs(f) < 1e6 else f"{f:.4g}"
