"""The size of one checkpoint of the seed's model, for the disk math of `callbacks.keep_last_checkpoints`.

The model of configs/train.yaml on VGG19's 20 x 4096 features, compiled as train compiles it
and stepped once (so Adam's two moment slots exist, as in every checkpoint_epoch_NNN.keras),
saved with model.save. Prints the bytes, and what 100 epochs cost with every checkpoint kept
against the default 3 (+ best_model.keras).

    .venv/bin/python bench/checkpoint_size.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    import numpy as np

    from trainer import config, losses, schedule
    from trainer.model import build_model
    from trainer.optimizer import ClippedAdam

    cfg = config.load(None)
    tc = cfg["train"]
    model = build_model(20, 4096, cfg["model"])
    lr = schedule.warmup_cosine(169, tc["epochs"], tc["warmup_epochs"], tc["learning_rate"], tc["min_learning_rate"])
    model.compile(optimizer=ClippedAdam(learning_rate=lr, global_clipnorm=tc["clipnorm"]),
                  loss=losses.build_loss(tc), metrics=["accuracy"])
    x = np.zeros((4, 20, 4096), np.float16)
    y = np.eye(2, dtype=np.float32)[[0, 1, 0, 1]]
    model.fit(x, y, epochs=1, verbose=0)
    path = Path(tempfile.mkdtemp()) / "checkpoint.keras"
    model.save(path)
    size = path.stat().st_size
    keep = cfg["callbacks"]["keep_last_checkpoints"]
    print(f"{model.count_params():,} weights; one checkpoint {size:,} bytes ({size / 1e6:.1f} MB)")
    print(f"100 epochs, every checkpoint kept: {100 * size / 1e9:.2f} GB; keep_last_checkpoints {keep} "
          f"(+ best_model.keras): at most {(keep + 1) * size / 1e9:.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
