"""Keyframe seeks on real long-GOP videos: the same bytes as the sequential pass, a fraction of the decoding.

The clips are small (128x96) but have the group-of-pictures structure of real footage:
a keyframe every 250 frames and B-frames (x264), so the seek plan really skips groups.
"""

from __future__ import annotations

import sys
from fractions import Fraction

import numpy as np
import pytest

from tests.trainer import seek_videos as sv
from tests.trainer import videos as tv
from trainer import seek_plan
from trainer.frames import sample_frames, sample_indices
from trainer.video_index import build_index, read_index

pytestmark = pytest.mark.skipif(not tv.has_ffmpeg(), reason="ffmpeg CLI not installed (CI installs it)")

N, SIZE = 20, 64
LONG = 5000  # 20 groups of 250 frames: one sampled frame in each, at its middle

CONTAINERS = {
    "mp4-x264": (".mp4", sv.X264_GOP250),
    # open groups of pictures: keyframes that are not IDR, B-frames shown before them
    "mkv-x264-open-gop": (".mkv", sv.X264_GOP250[:-2] + ["-x264-params", "open-gop=1", "-pix_fmt", "yuv420p"]),
    # MPEG-TS has no index: FFmpeg seeks it by bisecting on timestamps and lands near, not on, keyframes
    "ts-x264": (".ts", sv.X264_GOP250),
    "webm-vp9": (".webm", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-g", "250",
                           "-b:v", "200k"]),
}


class LongClips(dict):
    """Each container's clip, encoded on first use (once per test process)."""

    def __init__(self, root):
        super().__init__()
        self.root = root

    def __missing__(self, name):
        ext, args = CONTAINERS[name]
        self[name] = sv.long_gop_clip(self.root / f"long{ext}", LONG, args)
        return self[name]


@pytest.fixture(scope="module")
def long_clips(tmp_path_factory):
    return LongClips(tmp_path_factory.mktemp("long"))


def pixels(sampled) -> list[int]:
    return [sv.read_index(f) for f in sampled.frames]


@pytest.mark.parametrize("name", list(CONTAINERS))
def test_seeks_give_the_sequential_pass_bytes_on_long_gop_clips(long_clips, name):
    path = long_clips[name]
    seq = sample_frames(path, N, SIZE, threads=1, method="sequential")
    seek = sample_frames(path, N, SIZE, threads=1, method="seek")
    auto = sample_frames(path, N, SIZE, threads=1)
    assert (seq.method, seek.method, auto.method) == ("sequential", "seek", "seek")
    assert seq.indices == seek.indices == auto.indices == sample_indices(LONG, N)
    assert pixels(seq) == seq.indices  # the pixels say these really are those frames
    assert np.array_equal(seq.frames, seek.frames) and np.array_equal(seq.frames, auto.frames)  # byte-identical
    assert (seek.total_frames, seek.padded, seek.passes) == (LONG, False, 1)
    # the cost follows the frames sampled: each needed group is decoded up to its sampled
    # frame only, so at most about half of each of the 20 groups
    assert seq.frames_read == LONG and seek.frames_read <= LONG // 2 + 20 * seek_plan.RUN_OVERHEAD_FRAMES


def test_threaded_decoding_gives_the_same_bytes(long_clips):
    path = long_clips["mp4-x264"]
    seq = sample_frames(path, N, SIZE, threads=1, method="sequential")
    seek = sample_frames(path, N, SIZE, threads=None, method="seek")
    assert seek.method == "seek" and np.array_equal(seq.frames, seek.frames)


def test_the_container_index_lists_every_frame_and_keyframe_without_decoding(long_clips):
    index = read_index(long_clips["mp4-x264"])
    assert len(index) == LONG and index.container_frames == LONG
    assert index.keyframes == list(range(0, LONG, 250))
    assert index.times_s[:3] == pytest.approx([0, 0.04, 0.08]) and index.times_s[-1] == pytest.approx((LONG - 1) / 25)


def test_a_short_clip_without_b_frames_keeps_the_single_sequential_pass(tmp_path):
    total = 125  # 5 s at 25 fps: one group of pictures, every part of it holds a sampled frame
    path = sv.long_gop_clip(tmp_path / "short.mp4", total, sv.X264_GOP250_NO_B)
    auto = sample_frames(path, N, SIZE, threads=1)
    assert auto.method == "sequential" and auto.frames_read == total and auto.passes == 1
    assert pixels(auto) == sample_indices(total, N)


def test_a_short_clip_with_b_frames_skips_the_ones_nothing_refers_to(tmp_path):
    total = 125
    path = sv.long_gop_clip(tmp_path / "short.mp4", total)  # x264: B-frames, most of them non-reference
    seq = sample_frames(path, N, SIZE, threads=1, method="sequential")
    auto = sample_frames(path, N, SIZE, threads=1)
    assert auto.method == "seek" and auto.frames_read < 0.8 * total
    assert np.array_equal(seq.frames, auto.frames)


def test_without_pyav_every_video_is_read_sequentially_with_the_same_frames(long_clips, monkeypatch):
    path = long_clips["mp4-x264"]
    with_pyav = sample_frames(path, N, SIZE, threads=1)
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now fails, as where PyAV is not installed
    assert read_index(path) is None
    without = sample_frames(path, N, SIZE, threads=1)
    assert (with_pyav.method, without.method) == ("seek", "sequential")
    assert np.array_equal(with_pyav.frames, without.frames)


# --- the plan (pure functions on an index) ----------------------------------------------

def cfr_index(total: int, gop: int):
    packets = [(i * 512, i % gop == 0) for i in range(total)]  # 30 fps on a 1/15360 clock, as x264 in MP4
    return build_index(packets, Fraction(1, 15360), total)


def test_a_long_clip_plans_one_short_run_per_sampled_group():
    index = cfr_index(18000, 250)  # 10 minutes at 30 fps
    wanted = sample_indices(18000, N)
    runs = seek_plan.plan_runs(index, wanted)
    assert len(runs) == N and [r.targets for r in runs] == [[j] for j in wanted]
    assert all(r.key == j - j % 250 for r, j in zip(runs, wanted))
    assert seek_plan.plan_cost(index, runs) == sum(j % 250 + 1 + seek_plan.RUN_OVERHEAD_FRAMES for j in wanted)
    assert seek_plan.worth_seeking(index, runs)


def test_a_short_clip_is_one_run_through_its_only_group_and_not_worth_seeking():
    index = cfr_index(150, 250)
    runs = seek_plan.plan_runs(index, sample_indices(150, N))
    assert len(runs) == 1 and runs[0].key == 0 and runs[0].last == 146
    assert not seek_plan.worth_seeking(index, runs)  # no B-frames: the run decodes 147 of 150 frames


def test_runs_merge_where_decoding_through_is_cheaper_than_seeking():
    index = cfr_index(1000, 10)
    runs = seek_plan.plan_runs(index, [5, 12, 500])  # 12 is 7 frames after 5: read on, no seek
    assert [(r.key, r.targets) for r in runs] == [(0, [5, 12]), (500, [500])]


def test_b_frames_that_are_not_sampled_count_at_their_share():
    # decoding order I P B B P B B ...: each P is shown after the two B-frames stored behind it
    order = [0] + [p for g in range(1, 100, 3) for p in (g + 2, g, g + 1)]
    packets = [(pts * 512, pts == 0) for pts in order if pts < 100]
    index = build_index(packets, Fraction(1, 15360), 100)
    assert index.bframes_before[-1] == 66  # two in every three frames after the first
    runs = seek_plan.plan_runs(index, [98])
    b_skipped = 65  # the B-frames before 98, not counting 98 itself (a B-frame, but wanted)
    assert seek_plan.plan_cost(index, runs) == 99 - (1 - seek_plan.BFRAME_COST) * b_skipped + seek_plan.RUN_OVERHEAD_FRAMES


def test_an_index_without_timestamps_or_with_repeated_ones_is_unusable():
    assert build_index([(0, True), (None, False)], Fraction(1, 25), 2) is None
    assert build_index([(0, True), (0, False)], Fraction(1, 25), 2) is None
    assert build_index([], Fraction(1, 25), 0) is None
