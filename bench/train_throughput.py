"""Training throughput: this trainer vs a plain reference of the seed's, same run.

(c) `--mode real` (the default runs both): the REAL training path, `trainer.train.train`
with every callback and checkpoint (per-epoch and best .keras files, resume state, CSV,
TensorBoard, plateau, early stopping, SIGTERM handler) on a feature cache of N x 20 x
4096 float16 samples, against the seed-style reference, `model.fit` alone on the same
arrays (from_tensor_slices -> shuffle(10000) -> batch(64), Keras's focal loss, the same
validation data, no callbacks). Each runs 4 epochs; an epoch is timed from one epoch's start to the next
one's, so everything the trainer does at an epoch's end (saving, fsync) is inside it;
the first epoch (tracing) is left out.

(gpus) `--mode gpus`: the real training path on one device against all visible GPUs
(train.gpus 1 against 0), or, without GPUs, against 2 logical CPU devices; it prints the
ratio of whole epochs (checkpoints and callbacks included). `train.gpus: auto` (the
default) makes the same comparison on a few hundred steps at the start of every run
(trainer/device_choice.py); this is the longer, whole-epoch check of that choice.

(pipeline) `--mode pipeline`: only the input pipelines, as before:

Both train the same model (the seed's architecture, built by trainer.model) with the
same compile settings on random float16 features of the real shape (N x 20 x 4096):

- reference (the seed's pipeline): NumPy -> tf.data.Dataset.from_tensor_slices ->
  shuffle(10000) -> batch(64) -> prefetch, as the seed report describes it;
- trainer: trainer.data.make_dataset (index shuffle over the whole data set, gathered
  float16 batches, prefetch) with the "balanced" class weights fit really receives.

Each pipeline runs 1 untimed epoch (tracing) and then --epochs timed epochs; the script
prints samples/s of each (median epoch) and the ratio. On a GPU it also prints the epoch
time for the seed's 10,778 training samples (measured when --samples is 10778, the GPU
default; otherwise extrapolated from the measured rate, and labelled so).

    python bench/train_throughput.py                 # CPU: 512 samples (not 10,778: CPU time)
    python bench/train_throughput.py --samples 10778 # GPU: the real epoch
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

SEED_TRAIN_SAMPLES = 10_778


class EpochTimer:
    def __init__(self):
        import keras

        class _Timer(keras.callbacks.Callback):
            def on_epoch_begin(cb, epoch, logs=None):
                cb.t0 = time.perf_counter()

            def on_epoch_end(cb, epoch, logs=None):
                self.times.append(time.perf_counter() - cb.t0)

        self.times: list[float] = []
        self.callback = _Timer()


def build(units: int, steps_per_epoch: int, epochs: int):
    import keras

    from trainer import schedule
    from trainer.model import build_model

    model = build_model(20, 4096, {"lstm_units": units, "lstm_layers": 3, "dropout": 0.5,
                                   "dense_units": [256, 128, 64]})
    lr = schedule.warmup_cosine(steps_per_epoch, epochs, 1, 1e-3, 1e-7)
    model.compile(optimizer=keras.optimizers.Adam(lr, global_clipnorm=1.0),
                  loss=keras.losses.CategoricalFocalCrossentropy(alpha=0.25, gamma=2.0, label_smoothing=0.1),
                  metrics=["accuracy"])
    return model


def time_fit(model, dataset, epochs: int, class_weight=None) -> list[float]:
    timer = EpochTimer()
    model.fit(dataset, epochs=1 + epochs, verbose=0, shuffle=False, callbacks=[timer.callback],
              class_weight=class_weight)
    return timer.times[1:]  # the first epoch traces the graph


class EpochStarts:
    """Times between consecutive epoch starts: an epoch including all its end-of-epoch work."""

    def __init__(self):
        import keras

        outer = self
        self.starts: list[float] = []

        class _Timer(keras.callbacks.Callback):
            def on_epoch_begin(cb, epoch, logs=None):
                outer.starts.append(time.perf_counter())

            def on_train_end(cb, logs=None):
                outer.starts.append(time.perf_counter())

        self.callback = _Timer()

    def epochs(self) -> list[float]:
        return [b - a for a, b in zip(self.starts, self.starts[1:])]


def write_cache(work: Path, x, y):
    """A feature cache of x (train) and its first n_val samples (val), as extract writes it."""
    from trainer.cache import CLASSES, FeatureCache, settings_fingerprint

    cache = FeatureCache(work / "cache")
    settings = {"backbone": "vgg19", "weights": "none", "image_size": 224, "frames": 20}
    fp = settings_fingerprint(settings)
    cache.write_meta({**settings, "feature_shape": [20, 4096], "feature_dim": 4096, "dtype": "float16",
                      "fingerprint": fp})
    n_val = max(64, len(x) // 7)
    records = []
    for split, rows in (("train", range(len(x))), ("val", range(n_val))):
        for i in rows:
            key = f"{split}{i:06d}"
            cache.save_features(key, x[i])
            records.append({"path": f"{CLASSES[y[i]]}/{split}{i}.mp4", "label": CLASSES[y[i]], "split": split,
                            "status": "ok", "fingerprint": fp, "key": key})
    cache.append(records)
    return cache, n_val


def time_train(cfg: dict, cache_root: Path, out: Path, strategy=None) -> list[float]:
    """Seconds per epoch (start to start, the first left out) of the REAL trainer.train.train."""
    import keras

    from trainer.train import train

    timer = EpochStarts()
    original = keras.Model.fit

    def timed_fit(self, *a, **kw):  # a timer slipped in front of the trainer's own callbacks
        kw["callbacks"] = [timer.callback, *kw.get("callbacks", [])]
        return original(self, *a, **kw)

    keras.Model.fit = timed_fit
    try:
        assert train(cfg, cache_root, out, evaluate=False, strategy=strategy) == 0
    finally:
        keras.Model.fit = original
    return timer.epochs()[1:]


def real_path(args, x, y) -> tuple[float, float]:
    """(reference s/epoch, trainer s/epoch), median of the epochs after the first."""
    import shutil
    import tempfile

    import keras
    import tensorflow as tf

    from trainer import config, data

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    cache, n_val = write_cache(work, x, y)
    epochs = 4

    # reference: the seed's `fit` alone
    keras.utils.set_random_seed(0)
    ref = build(args.units, data.steps_per_epoch(len(x), args.batch_size), epochs)
    ref_ds = (tf.data.Dataset.from_tensor_slices((x, data.one_hot(y)))
              .shuffle(10_000).batch(args.batch_size).prefetch(tf.data.AUTOTUNE))
    val_ds = tf.data.Dataset.from_tensor_slices((x[:n_val], data.one_hot(y[:n_val]))).batch(args.batch_size)
    timer = EpochStarts()
    ref.fit(ref_ds, validation_data=val_ds, epochs=epochs, verbose=0, callbacks=[timer.callback])
    ref_epochs = timer.epochs()[1:]
    del ref, ref_ds

    # ours: the whole training path
    cfg = config.load(None, {"train": {"epochs": epochs, "batch_size": args.batch_size, "warmup_epochs": 1},
                             "model": {"lstm_units": args.units}})
    ours_epochs = time_train(cfg, cache.root, work / "run")
    size = sum({p.stat().st_ino: p.stat().st_size for p in (work / "run").glob("*.keras")}.values())  # links once
    print(f"(c) reference fit alone: epochs {', '.join(f'{t:.2f}' for t in ref_epochs)} s")
    print(f"(c) trainer.train.train: epochs {', '.join(f'{t:.2f}' for t in ours_epochs)} s "
          f"(with checkpoints: {size / 2**20:.0f} MiB of .keras files written in {epochs} epochs)")
    shutil.rmtree(work, ignore_errors=True)
    return statistics.median(ref_epochs), statistics.median(ours_epochs)


def one_against_many(args, x, y, gpus: int) -> int:
    """(gpus) The real training path on one device against all of them, same data, same run.

    On a machine with N >= 2 GPUs: train.gpus 1 against train.gpus 0 (MirroredStrategy over
    the N). Without GPUs: one CPU against a MirroredStrategy over 2 logical CPU devices
    (the same cores, so it measures only what replication costs: the split batch, the
    all-reduce and the one-step-per-call fallback), labelled as such. Prints the ratio and
    the setting it supports.
    """
    import shutil
    import tempfile

    import tensorflow as tf

    from trainer import config

    work = Path(tempfile.mkdtemp(prefix="bench-gpus-"))
    cache, _ = write_cache(work, x, y)
    epochs = 1 + args.epochs
    base = {"train": {"epochs": epochs, "batch_size": args.batch_size, "warmup_epochs": 1,
                      "mixed_precision": args.mixed_precision}, "model": {"lstm_units": args.units}}
    if gpus >= 2:
        many_name, one_name = f"{gpus} GPUs (MirroredStrategy)", "1 GPU"
        one = time_train(config.load(None, {**base, "train": {**base["train"], "gpus": 1}}), cache.root, work / "one")
        many = time_train(config.load(None, {**base, "train": {**base["train"], "gpus": 0}}), cache.root, work / "many")
    else:
        many_name, one_name = "2 logical CPU devices (MirroredStrategy, same cores)", "1 CPU device"
        cfg = config.load(None, base)
        one = time_train(cfg, cache.root, work / "one")
        many = time_train(cfg, cache.root, work / "many",
                          strategy=tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    shutil.rmtree(work, ignore_errors=True)
    o, m = statistics.median(one), statistics.median(many)
    print(f"(gpus) {one_name:<52} epoch {o:7.2f} s  (epochs: {', '.join(f'{t:.2f}' for t in one)} s)")
    print(f"(gpus) {many_name:<52} epoch {m:7.2f} s  (epochs: {', '.join(f'{t:.2f}' for t in many)} s)")
    print(f"(gpus) ratio many / one (speed): {o / m:.2f}x")
    if gpus >= 2:
        print("(gpus) on this machine: " + (f"train.gpus 0 (all {gpus}) is faster" if m < o else
                                            "train.gpus 1 is faster (one GPU) for this model")
              + "; train.gpus auto measures the same at the start of each run")
    return 0


def main() -> int:
    import tensorflow as tf

    on_gpu = bool(tf.config.list_physical_devices("GPU"))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=("both", "real", "pipeline", "gpus"), default="both",
                   help="real: (c) trainer.train.train vs fit alone; pipeline: the input pipelines only; "
                        "gpus: the real path on one device against all of them")
    p.add_argument("--samples", type=int, default=SEED_TRAIN_SAMPLES if on_gpu else 512)
    p.add_argument("--epochs", type=int, default=3 if on_gpu else 2, help="timed epochs per pipeline")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--units", type=int, default=128, help="LSTM units (the seed: 128)")
    p.add_argument("--mixed-precision", action=argparse.BooleanOptionalAction, default=True,
                   help="as the trainer: only takes effect on a GPU")
    args = p.parse_args()

    from trainer import data, runtime

    gpus = len(tf.config.list_physical_devices("GPU"))
    if args.mode == "gpus" and gpus < 2:  # before TensorFlow starts: two logical CPUs to mirror over
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    rt = runtime.setup(gpus_wanted=1 if on_gpu else 0, mixed_precision=args.mixed_precision)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.samples, 20, 4096), dtype=np.float32).astype(np.float16)
    y = rng.integers(0, 2, args.samples)
    steps = data.steps_per_epoch(args.samples, args.batch_size)
    print(f"device: {runtime.describe(rt)}; mixed precision {rt.mixed_precision_reason}")
    print(f"data: {args.samples} x 20 x 4096 float16 ({x.nbytes / 2**20:.0f} MiB), batch {args.batch_size}, "
          f"{steps} steps/epoch, model BiLSTM({args.units}) x 3; 1 warm-up + {args.epochs} timed epochs each")

    if args.mode == "gpus":
        return one_against_many(args, x, y, gpus)
    if args.mode in ("both", "real"):
        ref_s, ours_s = real_path(args, x, y)
        print(f"(c) real training path, {args.samples:,} samples/epoch: reference {args.samples / ref_s:,.0f} "
              f"samples/s, trainer {args.samples / ours_s:,.0f} samples/s; "
              f"ratio trainer / reference: {ref_s / ours_s:.2f}x")
        if on_gpu:
            print(f"(c) epoch of {SEED_TRAIN_SAMPLES:,} samples with every callback and checkpoint: "
                  f"{ours_s * SEED_TRAIN_SAMPLES / args.samples:.2f} s"
                  + (" (measured)" if args.samples == SEED_TRAIN_SAMPLES else f" (extrapolated from {args.samples})"))
        if args.mode == "real":
            return 0

    results = {}
    with rt.strategy.scope():
        # reference: the seed's pipeline as its report describes it
        ref_ds = (tf.data.Dataset.from_tensor_slices((x, data.one_hot(y)))
                  .shuffle(10_000).batch(args.batch_size).prefetch(tf.data.AUTOTUNE))
        results["reference (seed pipeline)"] = time_fit(build(args.units, steps, 1 + args.epochs), ref_ds, args.epochs)
        del ref_ds
        ours_ds = data.make_dataset(x, y, args.batch_size, shuffle=True)
        results["trainer (this pipeline)"] = time_fit(build(args.units, steps, 1 + args.epochs), ours_ds, args.epochs,
                                                      class_weight=data.balanced_class_weights(y))

    rates = {}
    for name, times in results.items():
        med = statistics.median(times)
        rates[name] = args.samples / med
        print(f"{name:<28} {rates[name]:10,.0f} samples/s   epoch {med:7.2f} s   "
              f"(epochs: {', '.join(f'{t:.2f}' for t in times)} s)")
    ref, ours = rates["reference (seed pipeline)"], rates["trainer (this pipeline)"]
    print(f"ratio trainer / reference: {ours / ref:.2f}x")
    if on_gpu:
        if args.samples == SEED_TRAIN_SAMPLES:
            print(f"epoch of {SEED_TRAIN_SAMPLES:,} samples on this GPU: "
                  f"{statistics.median(results['trainer (this pipeline)']):.2f} s (measured)")
        else:
            print(f"epoch of {SEED_TRAIN_SAMPLES:,} samples on this GPU: {SEED_TRAIN_SAMPLES / ours:.2f} s "
                  f"(extrapolated from {args.samples} samples)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
