"""`status`: one look at the host and the run — state, last epoch, the best model's epoch, GPUs, disk.

Everything comes from one remote command (sections separated by marker lines) so a
status costs one round trip; the table is drawn with rich.
"""

from __future__ import annotations

import csv
import io
import json
import time

from deploy.layout import Layout
from deploy.logs import run_state
from deploy.remote import Remote, rpath

GPU_QUERY = "index,name,utilization.gpu,memory.used,memory.total"


def collect(remote: Remote, layout: Layout, state, provider_facts: dict) -> dict:
    run = state.current_run
    info: dict = {"host": f"{remote.host.user}@{remote.host.host}:{remote.host.port}",
                  "workspace": layout.workspace, "run": run, "provider_facts": provider_facts}
    script = f"""
echo @@disk; df -Pk {rpath(layout.workspace)} 2>/dev/null | awk 'NR==2{{print $4, $2}}'
echo @@gpu; command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu={GPU_QUERY} --format=csv,noheader,nounits 2>/dev/null
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

    disk = (sections.get("disk") or [""])[0].split()
    if len(disk) == 2:
        info["disk_free_gb"] = round(int(disk[0]) / 1024**2, 1)
        info["disk_total_gb"] = round(int(disk[1]) / 1024**2, 1)
    gpus = []
    for row in csv.reader(sections.get("gpu", [])):
        if len(row) == 5:
            idx, name, util, used, total = (c.strip() for c in row)
            gpus.append({"index": idx, "name": name, "utilization_pct": util, "memory_used_mib": used,
                         "memory_total_mib": total})
    info["gpus"] = gpus
    if run:
        status, code = run_state(remote, layout.run_dir(run))
        info.update(state=status, exit_code=code)
        history = list(csv.DictReader(io.StringIO("\n".join(sections.get("history", [])))))
        if history:
            info["last_epoch"] = history[-1]
            info["epochs_done"] = len(history)
            best = best_model_epoch(history)
            if best:
                info["best_model"] = best
        info["log_tail"] = sections.get("log", [])
        fetched = state.runs.get(run, {})
        info["last_fetch_at"] = fetched.get("last_fetch_at")
    else:
        info["state"] = "no run started"
    if "watchdog" in sections:
        info["watchdog"] = watchdog_info(sections)
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


def watchdog_info(sections: dict, now: float | None = None) -> dict:
    now = time.time() if now is None else now
    alive = next((ln.split("=", 1)[1] for ln in sections.get("watchdog", []) if ln.startswith("alive=")), "0")
    st, stopped = _json(sections.get("wd_status", [])), _json(sections.get("wd_stopped", []))
    out = {"running": alive != "0", "pid": int(alive) if alive != "0" else None,
           "last_tick_at": st.get("at"), "last_tick_age_s": round(now - st["at"]) if st.get("at") else None,
           "will_stop": st.get("will_stop"), "activity": st.get("activity", []) + st.get("training", []),
           "last_stop_attempt": st.get("last_stop_attempt") or (stopped or None),
           "api": st.get("api") if isinstance(st.get("api"), dict) else None,
           "log_tail": sections.get("wd_log", [])}
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
    last = wd.get("last_stop_attempt")
    if last:
        when = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(last["at"])) if last.get("at") else "?"
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
    from rich.markup import escape
    from rich.table import Table

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
        t.add_row("last epoch", "  ".join(f"{k}={_fmt(last[k])}" for k in keys))
    if "best_model" in info:
        t.add_row("best model", describe_best(info))
    for g in info.get("gpus", []):
        t.add_row(f"gpu {g['index']}", f"{g['name']}  {g['utilization_pct']}% busy  "
                                     f"{g['memory_used_mib']}/{g['memory_total_mib']} MiB")
    if not info.get("gpus"):
        t.add_row("gpu", "none visible (no nvidia-smi)")
    if "disk_free_gb" in info:
        t.add_row("disk free", f"{info['disk_free_gb']} GB of {info['disk_total_gb']} GB in {info['workspace']}")
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
