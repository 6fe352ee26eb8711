"""Sampling at 20 equal points in time: variable-frame-rate clips evenly in time, constant-rate ones as before."""

from __future__ import annotations

import numpy as np
import pytest

from tests.trainer import seek_videos as sv
from tests.trainer import videos as tv
from trainer.frames import sample_frames, sample_indices, sample_positions

N = 20


# --- the rule on timestamps -------------------------------------------------------------

@pytest.mark.parametrize("total", [1, 5, 20, 21, 37, 48, 100, 299, 300, 1000, 18000])
@pytest.mark.parametrize("step_s,clock", [(1 / 25, None), (1 / 30, 1e-3), (1001 / 30000, 1e-3), (1001 / 30000, 1 / 90000)])
def test_constant_frame_rate_gives_exactly_todays_indices(total, step_s, clock):
    times = [i * step_s for i in range(total)]
    if clock:  # timestamps rounded to the container's clock (Matroska: 1 ms), as files store them
        times = [round(t / clock) * clock for t in times]
    assert sample_positions(times, N) == sample_indices(total, N)


def test_variable_frame_rate_is_sampled_at_equal_times():
    # 2 s at 10 fps, then 2 s at 30 fps: by index 5 samples would land in the first
    # half and 15 in the second; by time, 10 and 10.
    times = [i / 10 for i in range(20)] + [2 + i / 30 for i in range(60)]
    got = sample_positions(times, N)
    sv.assert_evenly_spaced_in_time(got, times, tolerance_s=0)
    assert sum(j < 20 for j in got) == 10
    assert sum(j < 20 for j in sample_indices(80, N)) == 5  # what index sampling did


def test_a_lone_dropped_frame_moves_no_sample_off_the_even_grid():
    times = [i / 25 for i in range(100) if i != 50]  # one frame missing from a 25 fps recording
    got = sample_positions(times, N)
    sv.assert_evenly_spaced_in_time(got, times, tolerance_s=0)


def test_timestamps_that_do_not_increase_fall_back_to_index_sampling():
    assert sample_positions([0.0] * 40, N) == sample_indices(40, N)  # a reader that gives no timestamps
    assert sample_positions([0.0, 0.1, 0.1, 0.2], N) == sample_indices(4, N)


# --- real variable-frame-rate clips -------------------------------------------------------

VFR_CODECS = {
    "mp4-x264": (".mp4", ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]),
    "mkv-mpeg4": (".mkv", ["-c:v", "mpeg4", "-q:v", "5"]),
}


@pytest.mark.skipif(not tv.has_ffmpeg(), reason="ffmpeg CLI not installed (CI installs it)")
@pytest.mark.parametrize("name", list(VFR_CODECS))
def test_a_variable_frame_rate_clip_is_sampled_evenly_in_time(tmp_path, name):
    ext, codec = VFR_CODECS[name]
    path, recorded = sv.vfr_clip(tmp_path / f"vfr{ext}", [(20, 10.0), (60, 30.0)], codec)
    times = sv.decoded_times(path)
    assert times == pytest.approx(recorded, abs=0.003)  # the premise: the file keeps the recorded times
    for method in ("auto", "sequential", "seek"):
        s = sample_frames(path, N, 64, method=method)
        got = [tv.read_index(f) for f in s.frames]
        assert got == s.indices, method  # the pixels say these really are those frames
        sv.assert_evenly_spaced_in_time(got, times)
        assert sum(j < 20 for j in got) == 10, method  # 2 s at 10 fps and 2 s at 30 fps: 10 samples each
        assert s.total_frames == 80 and not s.padded
    first = sample_frames(path, N, 64, method="sequential")
    assert np.array_equal(first.frames, sample_frames(path, N, 64, method="seek").frames)
