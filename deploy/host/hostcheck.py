"""What `up` learns about a host before anything is sent: workspace, Python, rsync, GPUs, disk.

One remote command, `key=value` lines back. Missing essentials (an interpreter, rsync,
a writable workspace) are one-line errors here rather than surprises in `sync`/`start`.
"""

from __future__ import annotations

from deploy.config import OVERLAY, VENV_MODES
from deploy.errors import UsageError
from deploy.host import host_text, overlay
from deploy.host.layout import Layout
from deploy.host.remote import Remote, q, rpath

MIN_PYTHON = (3, 10)


def probe(remote: Remote, config: dict) -> dict:
    ws = config["remote"]["workspace"]
    py = config["remote"]["python"]
    probe_py = Layout.host_python(config)
    script = f"""
mkdir -p {rpath(ws)} 2>/dev/null && cd {rpath(ws)} 2>/dev/null && touch .deploy-write-test 2>/dev/null \\
  && rm -f .deploy-write-test && echo "workspace=$(pwd -P)"
echo "rsync=$(command -v rsync)"
echo "setsid=$(command -v setsid)"
echo "python=$({q(probe_py)} -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null)"
echo "disk_free_kb=$(df -Pk . 2>/dev/null | awk 'NR==2{{print $4}}')"
{overlay.probe_sh(config) if py == OVERLAY else ""}
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | sed 's/^/gpu=/'
fi
"""
    facts: dict = {"gpus": []}
    for line in host_text.clean(remote.run(script).stdout).splitlines():  # the host's words: printed by `up`
        key, _, value = line.partition("=")
        if key == "gpu":
            facts["gpus"].append(value.strip())
        elif key:
            facts[key] = value.strip()
    host = remote.host.host
    if not facts.get("workspace"):
        raise UsageError(f"cannot create or write remote.workspace {ws!r} on {host}: pick a writable folder")
    if not facts.get("rsync"):
        raise UsageError(f"rsync is not installed on {host}: install it there (apt-get install rsync)")
    if not facts.get("setsid"):
        raise UsageError(f"setsid (util-linux) is missing on {host}: install util-linux there")
    version = facts.get("python", "")
    if not version:
        hint = "install python3 there" if py in VENV_MODES else "set remote.python to an interpreter that exists there"
        raise UsageError(f"remote.python {probe_py!r} does not run on {host}: {hint}")
    if py == OVERLAY and not facts.get("overlay_tensorflow"):
        raise UsageError(f"{facts.get('overlay_base', probe_py)} on {host} has no TensorFlow: {overlay.NO_TENSORFLOW}")
    if tuple(int(x) for x in version.split(".")[:2]) < MIN_PYTHON:
        raise UsageError(f"{probe_py} on {host} is Python {version}; the trainer needs "
                         f"{'.'.join(map(str, MIN_PYTHON))}+: set remote.python to a newer interpreter")
    free_kb = facts.pop("disk_free_kb", "")
    facts["disk_free_gb"] = round(int(free_kb) / 1024**2, 1) if free_kb.isdigit() else None  # df unreadable
    return facts
