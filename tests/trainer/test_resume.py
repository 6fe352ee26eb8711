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
TRAIN, BATCH = 1600, 16
STEPS = TRAIN // BATCH  # 100

CONFIG = """
model: {lstm_units: 8, lstm_layers: 1, dense_units: [16, 8, 8], dropout: 0.1}
train: {batch_size: 16, warmup_epochs: 2, mixed_precision: false, xla: false, learning_rate: 3.0e-3,
        steps_per_execution: 4}
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

    import trainer.losses  # noqa: F401  registers the custom loss, metric, optimizer and layer for load_model
    import trainer.metrics  # noqa: F401
    import trainer.model  # noqa: F401
    import trainer.optimizer  # noqa: F401
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
    # (logged: the rate of each epoch's last step)
    ref = schedule.warmup_cosine(STEPS, EPOCHS, 2, 3e-3, 1e-7)
    expected = [float(keras.ops.convert_to_numpy(ref((e + 1) * STEPS - 1))) for e in range(EPOCHS)]
    np.testing.assert_allclose([float(r["learning_rate"]) for r in rows], expected, rtol=1e-4)
    # optimizer step counts continue: each checkpoint holds exactly its epochs' steps
    for epoch in (2, 3, 5):
        model = keras.models.load_model(out / f"checkpoint_epoch_{epoch:03d}.keras")
        assert int(model.optimizer.iterations.numpy()) == epoch * STEPS
    assert _state(out)["epoch"] == EPOCHS
    # the log of all three processes is in train.log
    train_log = (out / "train.log").read_text()
    assert train_log.count("training epochs") == 3 and "stopped by SIGTERM" in train_log

    # exact: the same run without interruptions ends with the same weights, optimizer state
    # and history (same batches in the same order, same dropout masks, same steps)
    ref_out = tmp_path / "uninterrupted"
    proc = _start(cache, ref_out, cfg)
    log, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, log
    for name in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        assert [r[name] for r in _history(out)] == [r[name] for r in _history(ref_out)], name
    resumed = keras.models.load_model(out / f"checkpoint_epoch_{EPOCHS:03d}.keras")
    reference = keras.models.load_model(ref_out / f"checkpoint_epoch_{EPOCHS:03d}.keras")
    for a, b in zip(resumed.weights + resumed.optimizer.variables, reference.weights + reference.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)


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


KILL_MID_SAVE = r"""
import sys, zipfile
from pathlib import Path
import keras, numpy as np
from trainer import checkpoints

path = Path(sys.argv[1])
keras.utils.set_random_seed(1)
model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(256), keras.layers.Dense(2)])
model.compile("adam", "mse")
model.fit(np.ones((4, 64)), np.ones((4, 2)), verbose=0)
cb = checkpoints.AtomicModelCheckpoint(str(path), monitor="loss", save_best_only=True)
cb.set_model(model)
cb.on_train_begin()
cb.on_epoch_end(0, {"loss": 1.0})  # a first, complete best model
print("SAVED", flush=True)
model.set_weights([w + 1.0 for w in model.get_weights()])
real = zipfile.ZipFile.writestr
def stall(self, *a, **kw):  # the second save stops inside the zip: kill -9 lands mid-write
    real(self, *a, **kw)
    print("MIDSAVE", flush=True)
    import time; time.sleep(60)
zipfile.ZipFile.writestr = stall
cb.on_epoch_end(1, {"loss": 0.5})  # better: Keras decides to overwrite best_model.keras
"""


def test_sigkill_during_a_model_save_leaves_the_previous_file_intact(tmp_path):
    import keras

    best = tmp_path / "best_model.keras"
    proc = subprocess.Popen([sys.executable, "-c", KILL_MID_SAVE, str(best)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    lines = []
    for line in proc.stdout:
        lines.append(line.strip())
        if line.startswith("SAVED"):
            first = best.read_bytes()
        if line.startswith("MIDSAVE"):
            proc.kill()
            break
    proc.wait(timeout=60)
    assert lines[-1] == "MIDSAVE", lines
    assert best.read_bytes() == first  # untouched by the killed save
    model = keras.models.load_model(best)  # and a valid model
    assert model.count_params() == 64 * 256 + 256 + 256 * 2 + 2
    # the killed save's temporary file is recognisable and removed at the next start
    from trainer import checkpoints

    assert len(list(tmp_path.glob(".tmp-*.keras"))) == 1
    assert checkpoints.remove_stale_temporaries(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["best_model.keras"]


SMALL = """
model: {lstm_units: 4, lstm_layers: 1, dense_units: [8, 8], dropout: 0.1}
train: {batch_size: 16, warmup_epochs: 1, xla: false, learning_rate: 3.0e-3}
callbacks: {tensorboard: false}
"""


def test_a_resume_in_another_precision_is_refused_with_one_line(tmp_path, monkeypatch, capsys):
    """A mixed_float16 checkpoint resumed in float32 (a CPU, an old GPU, --no-mixed-precision)
    would load without its optimizer (Keras skips every variable with a warning): step count,
    warmup, Adam's moments and the loss scale start over. Refused instead, naming it."""
    import keras

    from trainer import runtime
    from trainer.cli import main

    cache = make_cache(tmp_path / "cache", {"train": 32, "val": 8, "test": 4})
    cfg = tmp_path / "small.yaml"
    cfg.write_text(SMALL)
    out = tmp_path / "run"
    args = ["train", "--cache-dir", str(cache), "--output-dir", str(out), "--config", str(cfg), "--epochs", "2",
            "--no-evaluate"]

    def on_a_gpu(m):  # what a GPU with tensor cores decides, recorded: mixed_float16 is effective
        m.setattr(runtime, "visible_gpus", lambda: ["/cpu:0"])
        m.setattr(runtime, "is_gpu", lambda device: True)
        m.setattr(runtime, "gpu_capability", lambda index=0: (8, 9))

    with monkeypatch.context() as m:
        on_a_gpu(m)
        assert main(args) == 0
    assert "mixed precision: on: mixed_float16" in capsys.readouterr().out
    info = json.loads((out / "model_info.json").read_text())
    assert info["run"]["precision"] == "mixed_float16"
    # as if killed during epoch 2: the last commit is epoch 1
    state = json.loads((out / "resume_state.json").read_text())
    (out / "resume_state.json").write_text(json.dumps({**state, "epoch": 1, "checkpoint": "checkpoint_epoch_001.keras"}))

    def refused():
        rc = main([*args, "--resume"])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1, err
        return err

    err = refused()  # here: no GPU, so float32
    assert f"resume: precision is float32 but the run in {out} was started with mixed_float16" in err
    assert "resume on a GPU with tensor cores" in err
    # a run from before the precision was recorded: the checkpoint's own optimizer says it
    del info["run"]["precision"]
    (out / "model_info.json").write_text(json.dumps(info))
    assert "was started with mixed_float16" in refused()
    keras.mixed_precision.set_global_policy("float32")

    # where mixed_float16 runs again, the run continues with its optimizer state
    with monkeypatch.context() as m:
        on_a_gpu(m)
        assert main([*args, "--resume"]) == 0
    keras.mixed_precision.set_global_policy("float32")
    log = capsys.readouterr().out
    assert "resume: checkpoint_epoch_001.keras (epoch 1/2, optimizer step 2)" in log
    model = keras.models.load_model(out / "checkpoint_epoch_002.keras")
    assert type(model.optimizer).__name__ == "ReplicaSafeLossScaleOptimizer"
    assert int(model.optimizer.iterations.numpy()) == 4  # 2 epochs x 2 steps, none lost
