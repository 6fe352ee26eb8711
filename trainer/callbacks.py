"""The callbacks Keras does not have; train.py composes them with Keras's own.

- `EpochProgress`: one line per epoch with the metrics, samples/s and the ETA.
- `ResumeState`: the commit point of an epoch. Keras's callbacks keep their state
  (EarlyStopping's best value, wait count and best weights; ModelCheckpoint's best
  value; ReduceLROnPlateau's wait and cooldown) only in memory and reset it in
  `on_train_begin`, so a resumed `fit` would forget it; Keras's BackupAndRestore saves
  the model and the epoch but not that state either. This callback writes it to
  `resume_state.json` after the epoch's checkpoint and CSV row are on disk, and puts
  it back into the same callback objects when a run resumes.
- `StopOnSignal`: SIGTERM (what a rented instance receives when it is stopped) ends
  the run at the next batch; the interrupted epoch is discarded and every completed
  epoch is already on disk, so `--resume` continues exactly from there.
"""

from __future__ import annotations

import io
import json
import signal
import time
from pathlib import Path

import keras
import numpy as np

from trainer.cache import atomic_write_bytes, atomic_write_json

STATE_FILE = "resume_state.json"
ES_WEIGHTS_FILE = "early_stopping_best_weights.npz"
CHECKPOINT_PATTERN = "checkpoint_epoch_{epoch:03d}.keras"


def checkpoint_name(epoch: int) -> str:
    """File of the checkpoint written after `epoch` (1-based) completed epochs."""
    return CHECKPOINT_PATTERN.format(epoch=epoch)


def format_seconds(s: float) -> str:
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s" if m else f"{sec}s"


class EpochProgress(keras.callbacks.Callback):
    def __init__(self, epochs: int, samples_per_epoch: int, log=print):
        super().__init__()
        self.epochs = epochs
        self.samples = samples_per_epoch
        self.log = log
        self.times: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        took = time.perf_counter() - self.t0
        self.times.append(took)
        # the first epoch of a process includes graph tracing: leave it out once others exist
        recent = (self.times[1:] if len(self.times) > 1 else self.times)[-5:]
        eta = (sum(recent) / len(recent)) * (self.epochs - epoch - 1)
        order = ["loss", "accuracy", "val_loss", "val_accuracy"]
        metrics = "  ".join(f"{k} {logs[k]:.4f}" for k in order if k in logs)
        lr = logs.get("learning_rate")
        lr_s = f"  lr {lr:.2e}" if lr is not None else ""
        self.log(
            f"epoch {epoch + 1:3d}/{self.epochs}  {metrics}{lr_s}  "
            f"{self.samples / took:,.0f} samples/s  {format_seconds(took)}  ETA {format_seconds(eta)}"
        )


class ResumeState(keras.callbacks.Callback):
    """Saves and restores the state of the stateful Keras callbacks; prunes old checkpoints."""

    def __init__(self, output_dir, early_stopping, best_checkpoint, plateau, keep_last: int = 0, restore: dict | None = None):
        super().__init__()
        self.dir = Path(output_dir)
        self.es = early_stopping
        self.best_ckpt = best_checkpoint
        self.plateau = plateau
        self.keep_last = keep_last
        self.restore = restore

    # ---- resume ----
    def on_train_begin(self, logs=None):
        # Runs after the other callbacks' on_train_begin (it is last in the list), which
        # is where Keras resets their state.
        if not self.restore:
            return
        es = self.restore.get("early_stopping")
        if es and self.es is not None:
            self.es.wait, self.es.best, self.es.best_epoch = es["wait"], es["best"], es["best_epoch"]
            self.es.stopped_epoch = es.get("stopped_epoch", 0)
            weights_path = self.dir / ES_WEIGHTS_FILE
            if self.es.restore_best_weights and weights_path.is_file():
                with np.load(weights_path) as data:
                    self.es.best_weights = [data[f"arr_{i}"] for i in range(len(data.files))]
        ck = self.restore.get("best_checkpoint")
        if ck and self.best_ckpt is not None and ck["best"] is not None:
            self.best_ckpt.best = ck["best"]
        pl = self.restore.get("plateau")
        if pl and self.plateau is not None:
            self.plateau.wait, self.plateau.best = pl["wait"], pl["best"]
            self.plateau.cooldown_counter = pl["cooldown_counter"]
            self.plateau.reductions = pl.get("reductions", 0)

    # ---- commit ----
    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        if self.es is not None and self.es.restore_best_weights and self.es.best_epoch == epoch and self.es.best_weights:
            buf = io.BytesIO()
            np.savez(buf, *self.es.best_weights)
            atomic_write_bytes(self.dir / ES_WEIGHTS_FILE, buf.getvalue())
        state = {
            "epoch": done,
            "checkpoint": checkpoint_name(done),
            "early_stopping": None if self.es is None else {
                "wait": self.es.wait, "best": _num(self.es.best), "best_epoch": self.es.best_epoch,
                "stopped_epoch": self.es.stopped_epoch,
            },
            "best_checkpoint": None if self.best_ckpt is None else {"best": _num(self.best_ckpt.best)},
            "plateau": None if self.plateau is None else {
                "wait": self.plateau.wait, "best": _num(self.plateau.best),
                "cooldown_counter": self.plateau.cooldown_counter, "reductions": self.plateau.reductions,
            },
            "stopped_early": bool(getattr(self.model, "stop_training", False) and self.es is not None and self.es.stopped_epoch == epoch),
        }
        atomic_write_json(self.dir / STATE_FILE, state)
        self._prune(done)

    def _prune(self, done: int):
        if self.keep_last <= 0:
            return
        for path in self.dir.glob("checkpoint_epoch_*.keras"):
            try:
                n = int(path.stem.rsplit("_", 1)[1])
            except ValueError:
                continue
            if n <= done - self.keep_last:
                path.unlink(missing_ok=True)


def _num(v):
    if v is None:
        return None
    v = float(v)
    return v if np.isfinite(v) else None


def read_state(output_dir) -> dict | None:
    path = Path(output_dir) / STATE_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


class TrainingInterrupted(Exception):
    """Raised out of fit() when SIGTERM arrived; the current epoch is discarded."""


class StopOnSignal(keras.callbacks.Callback):
    """SIGTERM -> stop at the next batch boundary (after the epoch's commit if it is ending)."""

    def __init__(self, signals=(signal.SIGTERM,)):
        super().__init__()
        self.received: int | None = None
        self._signals = signals
        self._previous = {}

    def _handler(self, signum, frame):
        self.received = signum

    def on_train_begin(self, logs=None):
        for s in self._signals:
            self._previous[s] = signal.signal(s, self._handler)

    def on_train_batch_end(self, batch, logs=None):
        if self.received is not None:
            raise TrainingInterrupted(signal.Signals(self.received).name)

    def on_epoch_end(self, epoch, logs=None):
        # Last in the list: the epoch is committed, so stopping here loses nothing.
        if self.received is not None:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        self.restore_handlers()

    def restore_handlers(self):
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}


class BatchBar(keras.callbacks.Callback):
    """A tqdm bar over the batches of the current epoch, only on an interactive terminal
    (in train.log and `make logs` the per-epoch line is enough)."""

    def __init__(self, steps: int):
        super().__init__()
        self.steps = steps
        self.bar = None

    def on_epoch_begin(self, epoch, logs=None):
        from tqdm import tqdm

        self.bar = tqdm(total=self.steps, desc=f"epoch {epoch + 1}", unit="batch", leave=False, disable=None)

    def on_train_batch_end(self, batch, logs=None):
        if self.bar is not None:
            self.bar.update(1)

    def on_epoch_end(self, epoch, logs=None):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
