"""The callbacks Keras does not have; train.py composes them with Keras's own.

- `EpochProgress`: one line per epoch with the metrics, samples/s and the ETA.
- `ResumeState`: the commit point of an epoch. Keras's callbacks keep their state
  (EarlyStopping's best value and wait count; ModelCheckpoint's best value;
  ReduceLROnPlateau's wait and cooldown) only in memory and reset it in
  `on_train_begin`, so a resumed `fit` would forget it; Keras's BackupAndRestore saves
  the model and the epoch but not that state either. The `.keras` file does not hold
  the dropout layers' random-generator state either. This callback writes all of it to
  `resume_state.json` after the epoch's checkpoint and CSV row are on disk, and puts
  it back into the same callback objects and layers when a run resumes.
- `CudnnReport`: on a GPU, looks into the traced train step for the cuDNN LSTM op
  (Keras falls back to the generic kernel silently) and says what it found.
- `EpochRateTensorBoard`: Keras's TensorBoard, logging the learning rate the epoch used.
- `StopOnSignal`: SIGTERM (what a rented instance receives when it is stopped) ends
  the run at the next batch; the interrupted epoch is discarded and every completed
  epoch is already on disk, so `--resume` continues exactly from there.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import keras
import numpy as np

from trainer.cache import atomic_write_json

STATE_FILE = "resume_state.json"
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
        rng = self.restore.get("rng")
        if rng is not None:
            set_rng_state(self.model, rng)
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
        state = {
            "epoch": done,
            "checkpoint": checkpoint_name(done),
            "rng": rng_state(self.model),
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


def _seed_states(model) -> list:
    # Each Dropout layer draws its masks from a SeedGenerator whose state variable
    # advances every step; model.save does not store it (a loaded model starts afresh).
    return [v for v in model.non_trainable_variables if v.path.endswith("seed_generator_state")]


def rng_state(model) -> list:
    return [np.asarray(keras.ops.convert_to_numpy(v)).tolist() for v in _seed_states(model)]


def set_rng_state(model, states: list) -> None:
    variables = _seed_states(model)
    if len(variables) != len(states):
        raise ValueError(f"resume: the checkpoint has {len(variables)} random generators, "
                         f"resume_state.json {len(states)}")
    for v, s in zip(variables, states):
        v.assign(np.asarray(s, dtype=v.dtype))


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
        # with steps_per_execution > 1 Keras reports the last step of each execution
        if self.bar is not None:
            self.bar.update(batch + 1 - self.bar.n)

    def on_epoch_end(self, epoch, logs=None):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


CUDNN_OPS = ("CudnnRNN", "CudnnRNNV2", "CudnnRNNV3")


def traced_op_types(tf_function) -> dict[str, int]:
    """How often each op type occurs in the graphs a tf.function has traced, nested
    functions (the while loops and conditionals of a train step) included."""
    from collections import Counter

    counts: Counter = Counter()
    functions = _tf_functions(tf_function)
    if not functions:
        raise LookupError("no tf.function found behind the train function")
    # TensorFlow has no public way to list the traces a tf.function already made;
    # this private method is what tf.saved_model uses for the same purpose.
    for function in functions:
        for concrete in function._list_all_concrete_functions():
            graph_def = concrete.graph.as_graph_def()
            counts.update(node.op for node in graph_def.node)
            for fn in graph_def.library.function:
                counts.update(node.op for node in fn.node_def)
    return dict(counts)


def _tf_functions(obj, depth: int = 0) -> list:
    """The tf.function objects behind `obj`: itself, or (Keras 3's model.train_function is
    a plain Python wrapper) those held in its closure, a few levels deep."""
    if hasattr(obj, "_list_all_concrete_functions"):
        return [obj]
    found = []
    if depth < 4:
        for cell in getattr(obj, "__closure__", None) or ():
            try:
                found += _tf_functions(cell.cell_contents, depth + 1)
            except ValueError:  # an empty cell
                continue
    return found


def describe_cudnn(op_counts: dict[str, int], lstm_count: int) -> str:
    found = sum(op_counts.get(op, 0) for op in CUDNN_OPS)
    if found:
        names = ", ".join(f"{op} x{op_counts[op]}" for op in CUDNN_OPS if op_counts.get(op))
        return f"cuDNN LSTM kernel in the traced train step: yes ({names}; {lstm_count} LSTM layers)"
    return (f"cuDNN LSTM kernel in the traced train step: NO (no {'/'.join(CUDNN_OPS)} op; Keras fell back "
            "to the generic LSTM kernel, several times slower on a GPU)")


class CudnnReport(keras.callbacks.Callback):
    """After the first epoch of a process (the train step is traced by then): is cuDNN in it?"""

    def __init__(self, lstm_count: int, log=print):
        super().__init__()
        self.lstm_count = lstm_count
        self.log = log
        self.result: str | None = None

    def on_epoch_end(self, epoch, logs=None):
        if self.result is not None or getattr(self.model, "train_function", None) is None:
            return
        try:
            counts = traced_op_types(self.model.train_function)
        except Exception as exc:  # a TensorFlow without the private listing: say so, train on
            self.result = f"cuDNN check: could not read the traced train step ({type(exc).__name__})"
        else:
            self.result = describe_cudnn(counts, self.lstm_count)
        self.log(self.result)


class EpochRateTensorBoard(keras.callbacks.TensorBoard):
    """Keras's TensorBoard re-reads optimizer.learning_rate (the next step's rate, after
    the plateau cut); keep the rate the epoch used, put into the logs by the plateau callback."""

    def _collect_learning_rate(self, logs):
        if "learning_rate" in logs:
            return logs
        return super()._collect_learning_rate(logs)
