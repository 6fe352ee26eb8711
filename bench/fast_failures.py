"""How long a user waits for the trainer to report a mistake that needs no TensorFlow to see.

Each case runs `python -m trainer ...` as a user would (a fresh interpreter, wall clock,
median of --repeats) and must exit 2 with one line. Baseline in the same run: a fresh
interpreter that only imports TensorFlow, what every one of these cases waited for before
the checks moved ahead of it (issue 22, item 7).

    .venv/bin/python bench/fast_failures.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.frame_sampling import machine  # noqa: E402


def wall(cmd: list[str], repeats: int, expect: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if r.returncode != expect:
            raise SystemExit(f"{' '.join(cmd)}: exit {r.returncode}, expected {expect}\n{r.stderr}")
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from tests.trainer import videos as tv
    from tests.trainer.tiny_cache import make_cache
    from trainer.cache import CLASSES, FeatureCache, atomic_write_json
    from trainer.model import build_model

    work = Path(tempfile.mkdtemp(prefix="fast-failures-"))
    run = work / "run"
    run.mkdir()
    cache = make_cache(work / "cache", {"train": 4, "val": 4, "test": 4})
    build_model(6, 8, {"lstm_units": 8, "lstm_layers": 1, "dropout": 0.1, "dense_units": [8, 8, 8]}).save(
        run / "best_model.keras")
    meta = FeatureCache(cache).read_meta()
    atomic_write_json(run / "model_info.json", {"cache_meta": meta, "backbone": meta, "classes": list(CLASSES)})
    (work / "empty").mkdir()
    (work / "clips").mkdir()
    no_val = make_cache(work / "noval", {"train": 4})
    tv.write_opencv(work / "ds/violent/a.mp4", tv.motion_frames(12, 1))
    model = str(run / "best_model.keras")
    py = [sys.executable, "-m", "trainer"]
    cases = {
        "predict a missing video": [*py, "predict", str(work / "missing.mp4"), "--model", model],
        "predict a folder": [*py, "predict", str(work / "clips"), "--model", model],
        "train on an empty cache dir": [*py, "train", "--cache-dir", str(work / "empty"), "--output-dir",
                                        str(work / "o")],
        "train on a cache without val": [*py, "train", "--cache-dir", str(no_val), "--output-dir", str(work / "o")],
        "train --gpus -1": [*py, "train", "--cache-dir", str(cache), "--output-dir", str(work / "o"), "--gpus", "-1"],
        "evaluate on an empty cache dir": [*py, "evaluate", "--cache-dir", str(work / "empty"), "--model", model],
    }
    print(f"machine: {machine()}")
    baseline = wall([sys.executable, "-c", "import tensorflow"], args.repeats, 0)
    print(f"baseline: a fresh interpreter importing TensorFlow: {baseline:.2f} s (median of {args.repeats})")
    for name, cmd in cases.items():
        t = wall(cmd, args.repeats, 2)
        print(f"{name:<34} {t:5.2f} s   {baseline / t:5.1f}x sooner than importing TensorFlow alone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
