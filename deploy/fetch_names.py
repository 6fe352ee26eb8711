"""What `fetch` accepts from a host: the names a training run writes, at a size we agreed to.

The host lists its results (sizes, SHA-256s, files held open for writing); every name in that
listing is the host's word, so only the names the trainer's output folder contract has
(DESIGN.md, trainer/train.py) are accepted:

    best_model.keras  model_info.json  training_history.csv  metrics.json  train.log
    plots/<name>.png
    tensorboard/<folder>/.../<event file>                     (at most 8 levels)
    checkpoint_epoch_NNN.keras  resume_state.json               (only with --checkpoints)

Each path component is letters, digits and `_.,+=@-`, not starting with a dot (no "..", no
hidden files, no control characters, no absolute part). Anything else is refused by name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from deploy.errors import UsageError
from deploy.host import host_text

RESULTS = ("best_model.keras", "model_info.json", "training_history.csv", "metrics.json", "train.log")
CHECKPOINT_FILES = ("resume_state.json",)
CHECKPOINT = re.compile(r"checkpoint_epoch_\d{3,6}\.keras")
RESULT_DIRS = ("plots", "tensorboard")
APPEND_ONLY = ("train.log", "training_history.csv", "tensorboard/")  # growing logs: a prefix is not torn
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.,+=@-]{0,199}")
TENSORBOARD_DEPTH = 8
DEFAULT_MAX_SIZE = 8 * 1024**3  # per file; a model of the seed's size is tens of MB
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?", re.I)


def parse_size(text: str) -> int:
    """'500M', '2G', '1.5GiB', '1024' -> bytes (binary units, as rsync's --max-size reads them)."""
    m = _SIZE.fullmatch((text or "").strip())
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"--max-size {text!r} is not a size: write e.g. 500M, 2G or 8G (bytes without a unit)")
    return int(float(m.group(1)) * 1024 ** " KMGT".index((m.group(2) or " ").upper()))


def refusal(name: str, checkpoints: bool = False) -> str | None:
    """Why `name` (relative to the run folder) is not a result fetch takes; None when it is one."""
    if not name:
        return "an empty name"
    if name.startswith("/"):
        return "an absolute path"
    parts = name.split("/")
    if ".." in parts:
        return "'..' in the path"
    if not all(_PART.fullmatch(p) for p in parts):
        return "a character or component no result name has"
    if len(parts) == 1:
        if name in RESULTS:
            return None
        if name in CHECKPOINT_FILES or CHECKPOINT.fullmatch(name):
            return None if checkpoints else "a checkpoint (fetch --checkpoints takes those)"
        return "not a file a run writes"
    if parts[0] == "plots":
        return None if len(parts) == 2 and parts[1].endswith(".png") else "plots/ holds <name>.png files only"
    if parts[0] == "tensorboard":
        return None if len(parts) <= TENSORBOARD_DEPTH + 1 else "deeper than TensorBoard's folders go"
    return "not a folder a run writes"


def append_only(name: str) -> bool:
    return any(name == a or (a.endswith("/") and name.startswith(a)) for a in APPEND_ONLY)


def find_expression(checkpoints: bool) -> str:
    """find(1) tests matching the candidates on the host (the host may lie: refusal() decides)."""
    names = list(RESULTS) + (list(CHECKPOINT_FILES) + ["checkpoint_epoch_*.keras"] if checkpoints else [])
    return " -o ".join([f"-path './{f}'" for f in names] + [f"-path './{d}/*'" for d in RESULT_DIRS])


@dataclass
class Listing:
    """The host's word about its results, split into what we take and what we refuse."""

    hashes: dict[str, str] = field(default_factory=dict)  # accepted name -> SHA-256 the host claims
    sizes: dict[str, int] = field(default_factory=dict)  # accepted name -> size the host claims
    writing: set[str] = field(default_factory=set)  # accepted names some process there holds open for writing
    refused: dict[str, str] = field(default_factory=dict)  # name as sent (sanitised) -> why
    too_big: dict[str, int] = field(default_factory=dict)  # accepted names over --max-size -> size

    def refuse(self, name: str, why: str) -> None:
        if len(self.refused) < 1000:  # a host sending millions of names costs it, not our memory
            self.refused[host_text.one_line(name)[:300]] = why


def parse_listing(text: str, checkpoints: bool, max_size: int) -> Listing:
    """Lines `size N ./name`, `<sha256>  ./name` (sha256sum's format) and `writing ./name`."""
    out = Listing()
    sizes: dict[str, int] = {}
    hashes: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("writing ./"):
            out.writing.add(line[len("writing ./"):])
            continue
        if line.startswith("size "):
            number, _, name = line[5:].partition(" ")
            if number.isdigit() and name:
                sizes[name[2:] if name.startswith("./") else name] = int(number)
                continue
        else:
            digest, sep, name = line.partition("  ")
            if sep and re.fullmatch(r"[0-9a-f]{64}", digest) and name:
                hashes[name[2:] if name.startswith("./") else name] = digest
                continue
        out.refuse(line, "not a line of the listing (a name with a newline or backslash?)")
    for name in sorted(set(hashes) | set(sizes)):
        why = refusal(name, checkpoints)
        if why is None and name not in sizes:
            why = "listed without a size"
        if why is not None:
            out.refuse(name, why)
        elif sizes[name] > max_size:
            out.too_big[name] = sizes[name]  # not hashed on the host either: it is not coming
        elif name not in hashes:
            out.refuse(name, "listed without a SHA-256")
        else:
            out.hashes[name], out.sizes[name] = hashes[name], sizes[name]
    out.writing &= set(out.hashes)
    return out
