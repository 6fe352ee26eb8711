"""`extract` records, per video, how its frames were read, and sums it up in the summary."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.trainer import seek_videos as sv
from tests.trainer import videos as tv
from trainer.cli import main

pytestmark = pytest.mark.skipif(not tv.has_ffmpeg(), reason="ffmpeg CLI not installed (CI installs it)")


def test_the_choice_per_video_is_in_the_index_and_the_summary(tmp_path, capsys):
    ds = tmp_path / "dataset"
    sv.long_gop_clip(ds / "Fight" / "long.mp4", 3000)  # 2 minutes at 25 fps, a keyframe every 250
    sv.long_gop_clip(ds / "NoFight" / "short.mp4", 125, sv.X264_GOP250_NO_B)  # 5 s, no B-frames to skip
    config = tmp_path / "thumb.yaml"
    config.write_text(yaml.safe_dump({"data": {"backbone": "thumbnail", "weights": "none", "image_size": 16,
                                               "frames": 20, "workers": 2}}))
    rc = main(["extract", "--dataset-path", str(ds), "--cache-dir", str(tmp_path / "cache"), "--config", str(config)])
    out = capsys.readouterr().out
    assert rc == 0
    records = {r["path"]: r for r in map(json.loads, (tmp_path / "cache" / "index.jsonl").read_text().splitlines())}
    long, short = records["Fight/long.mp4"], records["NoFight/short.mp4"]
    assert (long["sampling"], short["sampling"]) == ("seek", "sequential")
    assert (long["frames_decoded"], short["frames_decoded"]) == (3000, 125)
    assert short["frames_read"] == 125 and 0 < long["frames_read"] < 3000 // 2
    assert (f"frame sampling: 1 by keyframe seeks (decoded {long['frames_read']:,} of their 3,000 frames, "
            f"{long['frames_read'] / 3000:.0%}), 1 in one sequential pass (125 frames decoded)") in out
