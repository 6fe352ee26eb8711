"""Per-GPU use on the host: the `nvidia-smi --query-gpu=... --format=csv` query and its parser.

The format (NVIDIA's nvidia-smi man page, "--query-gpu" and "--format=csv"; the field names are
those of `nvidia-smi --help-query-gpu`): one header line naming the queried fields, each numeric
field followed by its unit in brackets, then one line per GPU, comma-and-space separated, each
value followed by its unit. A value the device or driver cannot report reads "[N/A]" or
"[Not Supported]" (in brackets, with the unit left out). For the query below:

    index, name, utilization.gpu [%], memory.used [MiB], memory.total [MiB], power.draw [W], power.limit [W], temperature.gpu
    0, NVIDIA RTX 5000 Ada Generation, 97 %, 30012 MiB, 32760 MiB, 245.67 W, 250.00 W, 71
    1, NVIDIA RTX 5000 Ada Generation, 0 %, 4 MiB, 32760 MiB, [N/A], 250.00 W, 38

We keep the header (not `noheader,nounits`) and map the columns by name, so a driver that orders
or labels a column differently cannot shift the values into the wrong fields. No GPU library
(pynvml) is used because the numbers are wanted on the host, and nvidia-smi is what every CUDA
host and every Vast.ai container already has.
"""

from __future__ import annotations

import csv
import re

FIELDS = ("index", "name", "utilization.gpu", "memory.used", "memory.total", "power.draw", "power.limit",
          "temperature.gpu")
QUERY = f"nvidia-smi --query-gpu={','.join(FIELDS)} --format=csv"
# sh: the CSV on stdout, or the single word `no-nvidia-smi` when the host has none
SCRIPT = f"if command -v nvidia-smi >/dev/null 2>&1; then {QUERY} 2>&1; else echo no-nvidia-smi; fi"
NO_NVIDIA_SMI = "no-nvidia-smi"

_UNIT = re.compile(r"\s*\[[^\]]*\]\s*$")  # " [MiB]" at the end of a header cell
_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)")


def _number(value: str) -> float | None:
    """'97 %' -> 97.0, '245.67 W' -> 245.67, '[N/A]' / '[Not Supported]' / '' -> None."""
    m = _NUMBER.match(value or "")
    return float(m.group(1)) if m else None


def parse(text: str) -> list[dict]:
    """The CSV (with its header) -> one dict per GPU: index, name, util_pct, mem_used_mib,
    mem_total_mib, power_w, power_limit_w, temp_c (numbers are floats or None)."""
    rows = list(csv.reader(line for line in text.splitlines() if line.strip()))
    if not rows or "index" not in [c.strip() for c in rows[0]]:
        return []
    header = [_UNIT.sub("", c).strip() for c in rows[0]]
    gpus = []
    for row in rows[1:]:
        if len(row) != len(header):
            continue  # a warning line, not a GPU
        cells = dict(zip(header, (c.strip() for c in row)))
        gpus.append({
            "index": cells.get("index", ""),
            "name": cells.get("name", ""),
            "util_pct": _number(cells.get("utilization.gpu", "")),
            "mem_used_mib": _number(cells.get("memory.used", "")),
            "mem_total_mib": _number(cells.get("memory.total", "")),
            "power_w": _number(cells.get("power.draw", "")),
            "power_limit_w": _number(cells.get("power.limit", "")),
            "temp_c": _number(cells.get("temperature.gpu", "")),
        })
    return gpus


def no_gpu_reason(text: str) -> str | None:
    """One line saying why there are no GPU numbers, or None when `text` parsed into GPUs."""
    if text.strip() == NO_NVIDIA_SMI:
        return "no GPU on the host (no nvidia-smi): training runs on the CPU there"
    if parse(text):
        return None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return f"no GPU numbers: nvidia-smi says: {lines[-1][:160]}" if lines else "no GPU numbers: nvidia-smi printed nothing"


def describe(gpu: dict) -> str:
    """'97% busy  30012/32760 MiB  246/250 W  71 C' (a missing figure reads '-')."""
    def num(v, fmt="{:.0f}"):
        return "-" if v is None else fmt.format(v)

    power = num(gpu["power_w"]) + (f"/{num(gpu['power_limit_w'])}" if gpu["power_limit_w"] is not None else "")
    return (f"{num(gpu['util_pct'])}% busy  {num(gpu['mem_used_mib'])}/{num(gpu['mem_total_mib'])} MiB  "
            f"{power} W  {num(gpu['temp_c'])} C")
