"""Finding the videos of a dataset folder, naming their class, and a stable train/val/test split.

Layouts understood (folder names in any case, any depth of sub-folders below the class):

    DATASET/<class>/**/video.ext                  split assigned here (stratified, seeded)
    DATASET/<split>/<class>/**/video.ext          split taken from the folder (train, val, test)

A video is a file with one of the extensions of trainer/video_formats.py (any case),
plus the config's `data.video_extensions`; other files are listed as ignored.

<class> is any name listed under `data.class_names` (e.g. Fight, NonFight, violence,
normal). A top-level folder that is neither a split nor a known class name stops the
run: silently dropping a class would train a wrong model.

The split is recorded (cache splits.json, path -> split) and never changes for a video
once assigned; new videos are dealt out so that each class stays close to the target
proportions. When split folders exist but no validation folder does, validation
videos are drawn from train the same way.

Copies of one video (identical content under other names, as merged datasets such as
RWF-2000 + RLVS contain) always share one split, or the test split would measure
memory: the split of the group's first copy in path order, a recorded split first.
Copies under both classes are a label conflict: one of the two labels is wrong, and
extract refuses them (naming both paths) unless `data.allow_label_conflicts` is true.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from trainer.errors import UsageError
from trainer.labels import CLASSES, SPLITS
from trainer.video_formats import VIDEO_EXTENSIONS

SPLIT_FOLDERS = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "test": "test", "testing": "test"}


@dataclass(frozen=True)
class Video:
    path: Path  # absolute
    rel: str  # relative to the dataset folder, '/'-separated: the video's identity in the cache
    label: str  # one of CLASSES
    split: str | None  # from a split folder, else None until assigned


def folder_key(name: str) -> str:
    """How folder names are compared: case, spaces, '-' and '_' do not matter (Non_Violence = non-violence)."""
    return "".join(ch for ch in str(name).lower() if ch not in " -_")


def class_lookup(class_names: dict[str, list[str]]) -> dict[str, str]:
    """folder_key(name) -> class, from the config's `data.class_names`."""
    unknown = set(class_names) - set(CLASSES)
    if unknown:
        raise UsageError(f"config: data.class_names may only name {', '.join(CLASSES)}; "
                         f"unknown class {sorted(unknown)[0]!r}")
    lookup: dict[str, str] = {}
    for cls in CLASSES:
        for name in [cls, *class_names.get(cls, [])]:
            key = folder_key(name)
            if lookup.get(key, cls) != cls:
                raise UsageError(f"config: data.class_names lists folder name {name!r} under both classes")
            lookup[key] = cls
    return lookup


@dataclass
class Listing:
    videos: list[Video]  # sorted by relative path
    ignored: list[str] = field(default_factory=list)  # other files in the class folders (relative paths)


def discover(root: str | Path, class_names: dict[str, list[str]],
             extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> list[Video]:
    """Every video under `root`, sorted by relative path."""
    return listing(root, class_names, extensions).videos


def listing(root: str | Path, class_names: dict[str, list[str]],
            extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> Listing:
    """The videos under `root` and the files that are not videos by their extension."""
    root = Path(root)
    if not root.exists():
        raise UsageError(f"dataset path does not exist: {root}")
    if not root.is_dir():
        raise UsageError(f"dataset path is not a folder: {root}")
    lookup = class_lookup(class_names)
    top = _subfolders(root)
    if not top:
        raise UsageError(f"dataset {root} has no class folders (expected e.g. {root}/violent/ and "
                         f"{root}/nonviolent/, or {root}/train/<class>/...)")

    videos: list[Video] = []
    ignored: list[Path] = []
    split_dirs = [d for d in top if d.name.lower() in SPLIT_FOLDERS]
    if split_dirs:
        others = [d.name for d in top if d not in split_dirs]
        if others:
            raise UsageError(f"dataset {root} mixes split folders ({', '.join(d.name for d in split_dirs)}) "
                             f"with other folders ({', '.join(others)}); use one layout")
        for split_dir in split_dirs:
            split = SPLIT_FOLDERS[split_dir.name.lower()]
            for cls_dir, label in _class_folders(split_dir, lookup):
                found, others = _files(cls_dir, extensions)
                videos += [Video(p, _rel(p, root), label, split) for p in found]
                ignored += others
    else:
        for cls_dir, label in _class_folders(root, lookup):
            found, others = _files(cls_dir, extensions)
            videos += [Video(p, _rel(p, root), label, None) for p in found]
            ignored += others
    if not videos:
        raise UsageError(f"no video files under {root} (looked for {' '.join(extensions)}, any case; "
                         f"add others under data.video_extensions in the config)")
    return Listing(sorted(videos, key=lambda v: v.rel), sorted(_rel(p, root) for p in ignored))


def _subfolders(folder: Path) -> list[Path]:
    # Hidden folders (.git, .ipynb_checkpoints, __MACOSX-style junk starting with '.') are not data.
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith((".", "__")))


def _class_folders(folder: Path, lookup: dict[str, str]) -> list[tuple[Path, str]]:
    subs = _subfolders(folder)
    unmapped = [d.name for d in subs if folder_key(d.name) not in lookup]
    if unmapped:
        known = ", ".join(sorted(lookup))
        raise UsageError(f"folder(s) {', '.join(unmapped)} in {folder} map to no class "
                         f"(found: {', '.join(d.name for d in subs)}; known names: {known}; "
                         f"add yours under data.class_names in the config)")
    return [(d, lookup[folder_key(d.name)]) for d in subs]


def _files(folder: Path, extensions: tuple[str, ...]) -> tuple[list[Path], list[Path]]:
    """(videos, other files) under `folder`; hidden files and folders are neither."""
    videos, others = [], []
    for p in sorted(folder.rglob("*")):
        if any(part.startswith(".") for part in p.relative_to(folder).parts) or not p.is_file():
            continue
        (videos if p.suffix.lower() in extensions else others).append(p)
    return videos, others


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


# --- split --------------------------------------------------------------------------

def duplicate_groups(videos: list[Video], content: dict[str, str] | None) -> list[list[str]]:
    """Paths (sorted) of every content that appears more than once; unreadable files never match."""
    by_sha: dict[str, list[str]] = {}
    for v in videos:
        sha = (content or {}).get(v.rel)
        if sha and not sha.startswith("unreadable:"):
            by_sha.setdefault(sha, []).append(v.rel)
    return sorted(sorted(rels) for rels in by_sha.values() if len(rels) > 1)


def label_conflicts(videos: list[Video], content: dict[str, str] | None) -> list[dict]:
    """Copies of one content under both classes: [{"sha256", "paths": {class: [rel, ...]}}], by first path."""
    label_of = {v.rel: v.label for v in videos}
    out = []
    for group in duplicate_groups(videos, content):
        by_label: dict[str, list[str]] = {}
        for rel in group:
            by_label.setdefault(label_of[rel], []).append(rel)
        if len(by_label) > 1:
            out.append({"sha256": content[group[0]], "paths": {c: by_label[c] for c in CLASSES if c in by_label}})
    return out


def conflict_error(conflicts: list[dict], allow_hint: str) -> UsageError:
    """One line naming both paths of the first conflict (and how many more there are)."""
    first = conflicts[0]["paths"]
    more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
    return UsageError(f"label conflict: the same video is in both classes: {first['violent'][0]} (violent) = "
                      f"{first['nonviolent'][0]} (nonviolent){more}; delete the copy with the wrong label, "
                      f"or {allow_hint} to keep both")


def assign_splits(videos: list[Video], recorded: dict[str, str], ratios: dict, seed: int,
                  content: dict[str, str] | None = None) -> dict[str, str]:
    """rel path -> split for every video; recorded assignments are kept as they are.

    Videos from split folders keep their folder's split (train videos may be moved to
    val when there is no validation folder at all). Every other new video goes, class by
    class in a seeded pseudo-random order, to the split furthest below its target share
    of that class: the first run gives a stratified split as close to the ratios as
    whole videos allow, and later runs with added videos keep every earlier assignment
    while the proportions stay near the targets.

    `content` (rel path -> content SHA-256) groups copies of one video: only the group's
    first copy is dealt, the others follow it, overriding a recorded or folder split.
    """
    groups = duplicate_groups(videos, content)
    follower_of = {rel: group[0] for group in groups for rel in group[1:]}
    if follower_of:
        # A copy with a recorded split leads its group (so a cache from before this rule
        # keeps as many assignments as it can); otherwise the first copy in path order.
        for group in groups:
            lead = next((rel for rel in group if recorded.get(rel) in SPLITS), group[0])
            for rel in group:
                follower_of.pop(rel, None)
                if rel != lead:
                    follower_of[rel] = lead
        leads = [v for v in videos if v.rel not in follower_of]
        out = assign_splits(leads, recorded, ratios, seed)
        for rel, lead in follower_of.items():
            out[rel] = out[lead]
        return out
    targets = {s: float(ratios[s]) for s in SPLITS}
    if any(v < 0 for v in targets.values()) or sum(targets.values()) <= 0:
        raise UsageError(f"config: data.split ratios must be >= 0 with a positive sum, got {targets}")
    total = sum(targets.values())
    targets = {s: v / total for s, v in targets.items()}

    out = {v.rel: recorded[v.rel] for v in videos if v.rel in recorded and recorded[v.rel] in SPLITS}
    label_of = {v.rel: v.label for v in videos}
    has_split_folders = any(v.split for v in videos)
    if has_split_folders:
        no_val_folder = not any(v.split == "val" for v in videos)
        train_val = {"train": targets["train"], "val": targets["val"]} if no_val_folder else None
        pending = []
        for v in videos:
            if v.rel in out:
                continue
            if v.split == "train" and train_val and sum(train_val.values()) > 0:
                pending.append(v)
            else:
                out[v.rel] = v.split or "train"
        _deal(pending, out, train_val or {}, seed, label_of)
    else:
        _deal([v for v in videos if v.rel not in out], out, targets, seed, label_of)
    return out


def _deal(new: list[Video], out: dict[str, str], targets: dict[str, float], seed: int,
          label_of: dict[str, str]) -> None:
    if not new:
        return
    total = sum(targets.values())
    targets = {s: r / total for s, r in targets.items()}
    for label in CLASSES:
        group = [v for v in new if v.label == label]
        # This class's videos already placed (present now, in the splits being dealt).
        counts = {s: 0 for s in targets}
        for rel, split in out.items():
            if split in counts and label_of.get(rel) == label:
                counts[split] += 1
        placed = sum(counts.values())
        # A seeded order that does not depend on how the file system lists the folder.
        for v in sorted(group, key=lambda v: hashlib.sha256(f"{seed}:{v.rel}".encode()).hexdigest()):
            placed += 1
            # The split with the largest shortfall against its target share (ties: the larger share).
            split = max(targets, key=lambda s: (targets[s] * placed - counts[s], targets[s]))
            counts[split] += 1
            out[v.rel] = split
