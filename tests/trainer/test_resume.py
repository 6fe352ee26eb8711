"""Exact resume: SIGKILL in the middle of an epoch, SIGTERM, and the state that must survive."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.trainer.tiny_cache import make_cache

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 5
TRAIN, BATCH = 3200, 16
STEPS = TRAIN // BATCH  # 200

CONFIG = """
model: {lstm_units: 8, lstm_layers: 1, dense_units: [16, 8, 8], dropout: 0.1}
train: {batch_size: 16, warmup_epochs: 2, mixed_precision: false, xla: false, learning_rate: 3.0e-3}
callbacks: {tensorboard: false, keep_last_checkpoints: 0}
"""


def _state(out: Path) -> dict | None:
    try:
        return json.loads((out / "resume_state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _start(cache, out, cfg, *extra):
    cmd = [sys.executable, "-m", "trainer", "train", "--cache-dir", str(cache), "--output-dir", str(out),
           "--config", str(cfg), "--epochs", str(EPOCHS), "--no-evaluate", *extra]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_mid_epoch(proc, out, after_epoch: int, epoch_seconds: float | None = None, timeout=240) -> float:
    """Return inside epoch `after_epoch + 1`, about a third of the way through it.

    The delay is measured, not guessed: `epoch_seconds` from an earlier process, or the
    time between two epoch commits seen here (the second epoch of a process: start-up and
    tracing are behind it), so a fast or a loaded machine both land mid-epoch. Returns that epoch duration. The callers check that the signal really
    arrived before the next commit.
    """
    deadline = time.time() + timeout
    seen: dict[int, float] = {}
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        s = _state(out)
        if s:
            seen.setdefault(s["epoch"], time.time())
        if s and s["epoch"] >= after_epoch:
            if epoch_seconds is None and after_epoch - 1 in seen:
                epoch_seconds = seen[after_epoch] - seen[after_epoch - 1]
            assert epoch_seconds is not None, "no epoch duration measured yet"
            time.sleep(epoch_seconds / 3)
            return epoch_seconds
        time.sleep(0.005)
    raise AssertionError("training did not reach the epoch in time")


def _history(out: Path) -> list[dict]:
    with open(out / "training_history.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_sigkill_then_sigterm_then_resume_is_exact(tmp_path):
    import keras

    import trainer.model  # noqa: F401  registers the custom layer for load_model
    from trainer import schedule

    cache = make_cache(tmp_path / "cache", {"train": TRAIN, "val": 32, "test": 8})
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(CONFIG)
    out = tmp_path / "run"

    # 1. SIGKILL in the middle of epoch 3: nothing of epoch 3 may count
    proc = _start(cache, out, cfg)
    epoch_seconds = _wait_mid_epoch(proc, out, after_epoch=2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _state(out)["epoch"]
    assert killed_at == 2, "the kill was meant to land inside epoch 3"

    # 2. resume, then SIGTERM in the middle of epoch 4: a clean, resumable stop
    proc = _start(cache, out, cfg, "--resume")
    _wait_mid_epoch(proc, out, after_epoch=3, epoch_seconds=epoch_seconds)
    proc.send_signal(signal.SIGTERM)
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, log
    assert "stopped by SIGTERM during epoch 4; epochs 1..3 are saved" in log
    assert f"resume: checkpoint_epoch_002.keras (epoch 2/{EPOCHS}, optimizer step {2 * STEPS})" in log
    assert _state(out)["epoch"] == 3
    assert [int(r["epoch"]) for r in _history(out)] == [0, 1, 2]

    # 3. resume to the end
    proc = _start(cache, out, cfg, "--resume")
    log, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, log
    assert f"optimizer step {3 * STEPS}" in log
    assert f"epoch   5/{EPOCHS}" in log

    rows = _history(out)
    assert [int(r["epoch"]) for r in rows] == list(range(EPOCHS)), "every epoch exactly once"
    # the learning rate follows the one warmup+cosine curve across both restarts: no jump
    ref = schedule.warmup_cosine(STEPS, EPOCHS, 2, 3e-3, 1e-7)
    expected = [float(keras.ops.convert_to_numpy(ref((e + 1) * STEPS))) for e in range(EPOCHS)]
    np.testing.assert_allclose([float(r["learning_rate"]) for r in rows], expected, rtol=1e-4)
    # optimizer step counts continue: each checkpoint holds exactly its epochs' steps
    for epoch in (2, 3, 5):
        model = keras.models.load_model(out / f"checkpoint_epoch_{epoch:03d}.keras")
        assert int(model.optimizer.iterations.numpy()) == epoch * STEPS
    assert _state(out)["epoch"] == EPOCHS
    # the log of all three processes is in train.log
    train_log = (out / "train.log").read_text()
    assert train_log.count("training epochs") == 3 and "stopped by SIGTERM" in train_log


def test_callback_state_survives_a_restart(tmp_path):
    """EarlyStopping / ModelCheckpoint / plateau state: saved at an epoch's commit, put back on resume."""
    import keras

    from trainer import callbacks as cb
    from trainer import schedule

    def fresh():
        es = keras.callbacks.EarlyStopping(patience=15)
        best = keras.callbacks.ModelCheckpoint(tmp_path / "best.keras", monitor="val_accuracy", save_best_only=True)
        pl = schedule.PlateauScaleCallback(peak_lr=1e-3, patience=7, factor=0.5)
        return es, best, pl

    def net():
        return keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dropout(0.5),
                                 keras.layers.Dense(2), keras.layers.Dropout(0.5)])

    model = net()
    model(np.ones((2, 3), np.float32), training=True)  # advance the dropout generators
    es, best, pl = fresh()
    for c in (es, best, pl):
        c.set_model(model)
        c.on_train_begin()
    es.best, es.wait, es.best_epoch = 0.25, 4, 6
    best.best = 0.875
    pl.best, pl.wait, pl.cooldown_counter, pl.reductions = 0.3, 3, 1, 2
    saver = cb.ResumeState(tmp_path, es, best, pl)
    saver.set_model(model)
    saver.on_epoch_end(6)

    es2, best2, pl2 = fresh()
    model2 = net()  # what load_model gives: the .keras file does not hold the generators' state
    restorer = cb.ResumeState(tmp_path, es2, best2, pl2, restore=cb.read_state(tmp_path))
    for c in (es2, best2, pl2, restorer):  # the order train.py uses: Keras resets first, then restore
        c.set_model(model2)
        c.on_train_begin()
    assert (es2.best, es2.wait, es2.best_epoch) == (0.25, 4, 6)
    # the dropout masks continue where they were: the next training call draws the same masks
    x = np.ones((8, 3), np.float32)
    model2.set_weights(model.get_weights())
    np.testing.assert_array_equal(np.asarray(model2(x, training=True)), np.asarray(model(x, training=True)))
    assert best2.best == 0.875
    assert (pl2.best, pl2.wait, pl2.cooldown_counter, pl2.reductions) == (0.3, 3, 1, 2)


def test_history_rows_of_uncommitted_epochs_are_dropped(tmp_path):
    from trainer.train import _truncate_history

    path = tmp_path / "training_history.csv"
    path.write_text("epoch,loss\r\n0,1.0\r\n1,0.9\r\n2,0.8\r\n")
    _truncate_history(path, completed_epochs=2)  # epoch index 2 was written, never committed
    assert path.read_text().splitlines() == ["epoch,loss", "0,1.0", "1,0.9"]


def test_keep_last_checkpoints_prunes_older_files(tmp_path):
    import keras

    from trainer import callbacks as cb

    for n in range(1, 6):
        (tmp_path / cb.checkpoint_name(n)).write_bytes(b"x")
    saver = cb.ResumeState(tmp_path, None, None, None, keep_last=2)
    saver.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    saver.on_epoch_end(4)  # epoch 5 committed
    assert sorted(p.name for p in tmp_path.glob("checkpoint_epoch_*")) == [
        "checkpoint_epoch_004.keras", "checkpoint_epoch_005.keras"]
