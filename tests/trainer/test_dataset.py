"""Discovery layouts, class-name synonyms and the stable stratified split.

Discovery only looks at names, so these tests use empty files with video extensions.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from trainer.config import DEFAULTS
from trainer.dataset import assign_splits, discover
from trainer.errors import UsageError

NAMES = DEFAULTS["data"]["class_names"]
RATIOS = DEFAULTS["data"]["split"]


def touch(root: Path, *rels: str) -> None:
    for rel in rels:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


def labels(videos) -> dict[str, str]:
    return {v.rel: v.label for v in videos}


def test_class_folders_synonyms_any_case_nested_and_extensions(tmp_path):
    touch(tmp_path, "Fight/a.MP4", "Fight/day2/cam1/b.avi", "NoFight/c.MkV", "NoFight/deep/er/d.webm",
          "Fight/e.mpeg", "Fight/f.3GP", "NoFight/g.wmv", "NoFight/h.m4v", "Fight/i.flv", "Fight/j.mov",
          "NoFight/k.mpg",
          "Fight/notes.txt", "Fight/.hidden/x.mp4", "NoFight/thumb.jpg", ".git/objects/y.mp4")
    vids = discover(tmp_path, NAMES)
    assert labels(vids) == {
        "Fight/a.MP4": "violent", "Fight/day2/cam1/b.avi": "violent", "Fight/e.mpeg": "violent",
        "Fight/f.3GP": "violent", "Fight/i.flv": "violent", "Fight/j.mov": "violent",
        "NoFight/c.MkV": "nonviolent", "NoFight/deep/er/d.webm": "nonviolent", "NoFight/g.wmv": "nonviolent",
        "NoFight/h.m4v": "nonviolent", "NoFight/k.mpg": "nonviolent",
    }
    assert all(v.split is None and v.path.is_absolute() for v in vids)


@pytest.mark.parametrize("violent,nonviolent", [
    ("violence", "non-violence"), ("Violence", "NonViolence"), ("fights", "normal"),
    ("VIOLENT", "Non_Violence"), ("fight", "no_fight"), ("violent", "non-violent"), ("Fight", "NoFight"),
    ("Fights", "No Fight"), ("VIOLENCE", "NON-VIOLENT"),
])
def test_default_synonyms(tmp_path, violent, nonviolent):
    touch(tmp_path, f"{violent}/a.mp4", f"{nonviolent}/b.mp4")
    assert labels(discover(tmp_path, NAMES)) == {f"{violent}/a.mp4": "violent", f"{nonviolent}/b.mp4": "nonviolent"}


def test_synonyms_come_from_the_config(tmp_path):
    touch(tmp_path, "Assault/a.mp4", "Calm/b.mp4")
    names = {"violent": ["assault"], "nonviolent": ["calm"]}
    assert labels(discover(tmp_path, names)) == {"Assault/a.mp4": "violent", "Calm/b.mp4": "nonviolent"}
    with pytest.raises(UsageError, match="Assault"):
        discover(tmp_path, NAMES)


def test_unknown_class_folder_stops_with_the_names_found(tmp_path):
    touch(tmp_path, "violence/a.mp4", "nonviolence/b.mp4", "robbery/c.mp4")
    with pytest.raises(UsageError) as exc:
        discover(tmp_path, NAMES)
    msg = str(exc.value)
    assert "robbery" in msg and "violence" in msg and "nonviolence" in msg and "\n" not in msg


def test_same_folder_name_under_both_classes_is_rejected(tmp_path):
    touch(tmp_path, "fight/a.mp4")
    with pytest.raises(UsageError, match="both classes"):
        discover(tmp_path, {"violent": ["fight"], "nonviolent": ["Fight"]})


def test_split_folder_layout_any_case(tmp_path):
    touch(tmp_path, "Train/Fight/a.mp4", "Train/No-Fight/b.mp4", "VAL/violence/c.mp4", "val/normal/d.avi",
          "test/fights/sub/e.mkv", "Test/normal/f.mp4")
    vids = discover(tmp_path, NAMES)
    got = {v.rel: (v.label, v.split) for v in vids}
    assert got["Train/Fight/a.mp4"] == ("violent", "train")
    assert got["VAL/violence/c.mp4"] == ("violent", "val")
    assert got["test/fights/sub/e.mkv"] == ("violent", "test")
    assert got["Test/normal/f.mp4"] == ("nonviolent", "test")
    splits = assign_splits(vids, {}, RATIOS, 42)
    assert all(splits[v.rel] == v.split for v in vids)  # folders decide


def test_split_folders_mixed_with_class_folders_are_rejected(tmp_path):
    touch(tmp_path, "train/fight/a.mp4", "fight/b.mp4")
    with pytest.raises(UsageError, match="mixes split folders"):
        discover(tmp_path, NAMES)


def test_missing_or_empty_dataset(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        discover(tmp_path / "nope", NAMES)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no class folders"):
        discover(tmp_path / "empty", NAMES)
    touch(tmp_path, "novideo/violent/readme.txt")
    with pytest.raises(UsageError, match="no video files"):
        discover(tmp_path / "novideo", NAMES)


# --- split ------------------------------------------------------------------------

def make_class_layout(root: Path, n_violent: int, n_nonviolent: int, start: int = 0) -> None:
    touch(root, *[f"violent/v{i:04d}.mp4" for i in range(start, start + n_violent)],
          *[f"nonviolent/n{i:04d}.mp4" for i in range(start, start + n_nonviolent)])


def split_counts(videos, splits) -> dict[tuple[str, str], int]:
    return Counter((v.label, splits[v.rel]) for v in videos)


def test_stratified_70_15_15(tmp_path):
    make_class_layout(tmp_path, 100, 60)
    vids = discover(tmp_path, NAMES)
    splits = assign_splits(vids, {}, RATIOS, 42)
    c = split_counts(vids, splits)
    assert (c["violent", "train"], c["violent", "val"], c["violent", "test"]) == (70, 15, 15)
    assert (c["nonviolent", "train"], c["nonviolent", "val"], c["nonviolent", "test"]) == (42, 9, 9)


def test_split_is_seeded_and_independent_of_listing_order(tmp_path):
    make_class_layout(tmp_path, 40, 40)
    vids = discover(tmp_path, NAMES)
    a = assign_splits(vids, {}, RATIOS, 42)
    assert assign_splits(list(reversed(vids)), {}, RATIOS, 42) == a
    b = assign_splits(vids, {}, RATIOS, 7)
    assert a != b  # the seed matters
    # Not simply the first 70% of names in alphabetical order.
    first = sorted(v.rel for v in vids if v.label == "violent")[:28]
    assert {a[r] for r in first} != {"train"}


def test_adding_videos_keeps_every_assignment_and_the_proportions(tmp_path):
    make_class_layout(tmp_path, 40, 40)
    first = assign_splits(discover(tmp_path, NAMES), {}, RATIOS, 42)
    make_class_layout(tmp_path, 60, 20, start=40)  # 100 violent, 60 nonviolent now
    vids = discover(tmp_path, NAMES)
    second = assign_splits(vids, first, RATIOS, 42)
    assert all(second[rel] == split for rel, split in first.items())
    c = split_counts(vids, second)
    for label, n in (("violent", 100), ("nonviolent", 60)):
        for split, share in (("train", 0.70), ("val", 0.15), ("test", 0.15)):
            assert abs(c[label, split] - share * n) <= 1.0, (label, split, c)


def test_recorded_split_wins_even_if_off_target(tmp_path):
    make_class_layout(tmp_path, 10, 10)
    vids = discover(tmp_path, NAMES)
    recorded = {v.rel: "test" for v in vids[:5]}
    splits = assign_splits(vids, recorded, RATIOS, 42)
    assert all(splits[r] == "test" for r in recorded)


def test_validation_is_carved_from_train_when_there_is_no_val_folder(tmp_path):
    touch(tmp_path, *[f"train/fight/f{i}.mp4" for i in range(34)], *[f"train/nofight/n{i}.mp4" for i in range(34)],
          *[f"test/fight/t{i}.mp4" for i in range(6)], *[f"test/nofight/u{i}.mp4" for i in range(6)])
    vids = discover(tmp_path, NAMES)
    splits = assign_splits(vids, {}, RATIOS, 42)
    c = split_counts(vids, splits)
    # val takes 0.15 / (0.70 + 0.15) of each class's training videos; test folders stay test.
    assert (c["violent", "val"], c["nonviolent", "val"]) == (6, 6)
    assert (c["violent", "train"], c["violent", "test"]) == (28, 6)
    assert all(splits[v.rel] == "test" for v in vids if v.split == "test")


def test_copies_of_one_video_always_share_a_split(tmp_path):
    make_class_layout(tmp_path, 60, 60)
    vids = discover(tmp_path, NAMES)
    # 20 contents each present twice (a merged dataset: same clip, another name), the rest unique
    content = {v.rel: f"sha-{v.rel}" for v in vids}
    rels = sorted(content)
    pairs = [(rels[i], rels[-1 - i]) for i in range(20)]
    for a, b in pairs:
        content[b] = content[a]
    by_path = assign_splits(vids, {}, RATIOS, 42)
    assert any(by_path[a] != by_path[b] for a, b in pairs), "by path alone some copies are split apart"
    splits = assign_splits(vids, {}, RATIOS, 42, content=content)
    assert all(splits[a] == splits[b] for a, b in pairs)
    assert set(splits) == {v.rel for v in vids}
    c = Counter(splits.values())
    assert abs(c["train"] - 0.7 * 120) <= 12 and c["test"] >= 10  # still close to 70/15/15
    # a recorded split leads its group (one copy seen before the other arrived)
    a, b = pairs[0]
    other = "test" if splits[a] != "test" else "val"
    again = assign_splits(vids, {a: other}, RATIOS, 42, content=content)
    assert again[a] == again[b] == other
    # split folders: the copy in test/ and the copy in train/ end up together
    root = tmp_path / "folders"
    touch(root, "train/fight/x.mp4", "test/fight/y.mp4", "train/fight/z.mp4", "test/nofight/w.mp4",
          "train/nofight/v.mp4", "val/nofight/u.mp4")
    fv = discover(root, NAMES)
    folder_splits = assign_splits(fv, {}, RATIOS, 42, content={"train/fight/x.mp4": "s", "test/fight/y.mp4": "s"})
    assert folder_splits["train/fight/x.mp4"] == folder_splits["test/fight/y.mp4"]
