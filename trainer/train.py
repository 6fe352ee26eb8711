"""`python -m trainer train`: the whole training path, top to bottom.

config -> data -> devices -> model, loss, schedule -> callbacks -> fit -> evaluate.
Everything it writes lands in --output-dir:
    best_model.keras, checkpoint_epoch_NNN.keras, training_history.csv, tensorboard/,
    train.log, model_info.json (what predict needs), resume_state.json, metrics.json, plots/
"""

from __future__ import annotations

import csv
import io
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from trainer import config as config_lib
from trainer.cache import CLASSES, FeatureCache, atomic_write_json
from trainer.errors import UsageError

INFO_FILE = "model_info.json"
HISTORY_FILE = "training_history.csv"
BEST_MODEL = "best_model.keras"
EXIT_SIGTERM = 143  # 128 + SIGTERM: stopped cleanly, resumable with --resume


def run(args) -> int:
    overrides: dict = {}
    config_lib.set_dotted(overrides, "train.epochs", args.epochs)
    config_lib.set_dotted(overrides, "train.batch_size", args.batch_size)
    config_lib.set_dotted(overrides, "train.gpus", args.gpus)
    config_lib.set_dotted(overrides, "train.mixed_precision", args.mixed_precision)
    config_lib.set_dotted(overrides, "train.xla", args.xla)
    config_lib.set_dotted(overrides, "train.focal_loss", args.use_focal_loss)
    config_lib.set_dotted(overrides, "train.class_weights", args.use_class_weights)
    cfg = config_lib.load(args.config, overrides)
    for key in ("epochs", "batch_size"):
        if cfg["train"][key] < 1:
            raise UsageError(f"train.{key} must be >= 1, got {cfg['train'][key]}")
    if not Path(args.cache_dir).is_dir():
        raise UsageError(f"--cache-dir {args.cache_dir} does not exist (run `python -m trainer extract` first)")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    from trainer import runlog

    with runlog.tee(out / "train.log"):
        return train(cfg, args.cache_dir, out, resume=args.resume, evaluate=not args.no_evaluate)


def train(cfg: dict, cache_dir, out: Path, resume: bool = False, evaluate: bool = True, strategy=None) -> int:
    import keras

    from trainer import callbacks as cb
    from trainer import data, runtime, schedule
    from trainer.model import build_model, cudnn_eligible, lstm_layers
    from trainer.timeline import typical_clip

    tc, cc = cfg["train"], cfg["callbacks"]
    epochs, batch = tc["epochs"], tc["batch_size"]

    # ---- where we start: fresh, or after the last committed epoch --------------------
    state = cb.read_state(out)
    if state is not None and not resume:
        raise UsageError(f"{out} already holds a training run; pass --resume to continue it, or use another --output-dir")
    if resume and state is None:
        print(f"resume: no completed epoch in {out}; starting from scratch")
    initial_epoch = state["epoch"] if (resume and state) else 0
    if resume and state:
        recorded = _read_info(out)["config"]["train"]["epochs"]
        if recorded != epochs:
            raise UsageError(
                f"resume: this run was started with --epochs {recorded} (the learning-rate schedule is "
                f"laid out for it); resume with --epochs {recorded}"
            )

    # ---- data: the whole cache in memory, once ---------------------------------------
    meta = FeatureCache(cache_dir).read_meta()
    if meta is None:
        raise UsageError(f"no feature cache at {cache_dir} (run `python -m trainer extract` first)")
    x_train, y_train, _ = data.load_split(cache_dir, "train")
    x_val, y_val, _ = data.load_split(cache_dir, "val")
    if len(x_train) == 0 or len(x_val) == 0:
        raise UsageError(f"the cache needs train and val videos; it has {len(x_train)} train, {len(x_val)} val")
    if len(set(y_train.tolist())) < len(CLASSES):
        raise UsageError("the training split holds only one class; both violent and non-violent videos are needed")
    frames, dim = meta["feature_shape"]
    steps = data.steps_per_epoch(len(x_train), batch)
    print(f"cache: {cache_dir}  backbone {meta.get('backbone')} ({meta.get('weights')}), "
          f"{frames} frames x {dim} features, {x_train.dtype}")
    print(f"data: {len(x_train)} train / {len(x_val)} val videos; global batch {batch} -> {steps} steps per epoch")

    # ---- devices, precision -----------------------------------------------------------
    keras.utils.set_random_seed(tc["seed"] + initial_epoch)
    rt = runtime.setup(tc["gpus"], tc["mixed_precision"], strategy)
    print(f"devices: {runtime.describe(rt)}" + (f" ({batch / rt.replicas:g} samples per replica per step)" if rt.replicas > 1 else ""))
    print(f"mixed precision: {rt.mixed_precision_reason}")

    # ---- class weights ("balanced"), logged and really passed to fit ------------------
    class_weight = data.balanced_class_weights(y_train) if tc["class_weights"] else None
    counts = {CLASSES[c]: int((y_train == c).sum()) for c in range(len(CLASSES))}
    if class_weight:
        print("class weights (balanced): " + ", ".join(
            f"{CLASSES[c]} {w:.3f} ({counts[CLASSES[c]]} videos)" for c, w in class_weight.items()))
    else:
        print(f"class weights: off ({counts})")

    # ---- model, loss, optimizer (built in the strategy's scope) -----------------------
    with rt.strategy.scope():
        if initial_epoch:
            model = keras.models.load_model(out / state["checkpoint"])
            print(f"resume: {state['checkpoint']} (epoch {initial_epoch}/{epochs}, "
                  f"optimizer step {int(model.optimizer.iterations.numpy())})")
            jit_reason = f"{'on' if model.jit_compile else 'off'} (as the run started)"
            if tuple(model.input_shape[1:]) != (frames, dim):
                raise UsageError(f"resume: the checkpoint expects {tuple(model.input_shape[1:])} features but the "
                                 f"cache holds {(frames, dim)}; resume with the cache the run started on")
        else:
            model = build_model(frames, dim, cfg["model"])
            lr = schedule.warmup_cosine(steps, epochs, tc["warmup_epochs"], tc["learning_rate"], tc["min_learning_rate"])
            optimizer = keras.optimizers.Adam(learning_rate=lr, global_clipnorm=tc["clipnorm"])
            if tc["focal_loss"]:
                loss = keras.losses.CategoricalFocalCrossentropy(
                    alpha=tc["focal_alpha"], gamma=tc["focal_gamma"], label_smoothing=tc["label_smoothing"])
            else:
                loss = keras.losses.CategoricalCrossentropy(label_smoothing=tc["label_smoothing"])
            jit, jit_reason = runtime.decide_jit(rt, tc["xla"], model)
            model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"], jit_compile=jit)
    lr_schedule = schedule.find_scaled_schedule(model.optimizer)
    eligible = all(cudnn_eligible(layer) for layer in lstm_layers(model))
    print(f"model: {model.count_params():,} parameters ({cfg['model']['lstm_layers']} x BiLSTM({cfg['model']['lstm_units']}) "
          f"+ attention + dense {cfg['model']['dense_units']}); LSTMs cuDNN-eligible: {'yes' if eligible else 'NO'}"
          f"{' (cuDNN kernel in use)' if eligible and rt.on_gpu else ''}")
    print(f"XLA: {jit_reason}")
    print(f"loss: {type(model.loss).__name__}" + (f" (alpha {tc['focal_alpha']}, gamma {tc['focal_gamma']})" if tc["focal_loss"] else "")
          + f", label smoothing {tc['label_smoothing']}; optimizer Adam, global clipnorm {tc['clipnorm']}")
    print(f"learning rate: {schedule.describe(lr_schedule, steps, epochs)}; ReduceLROnPlateau scales it "
          f"(scale now {float(lr_schedule.scale.numpy()):g})")
    if not initial_epoch:
        atomic_write_json(out / INFO_FILE, {
            "cache_meta": meta, "cache_dir": str(Path(cache_dir).resolve()), "classes": list(CLASSES), "config": cfg,
            "parameters": int(model.count_params()), "steps_per_epoch": steps,
            # the training clips' median length: predict --window's default window
            **typical_clip(FeatureCache(cache_dir).ok_records("train")),
        })

    # ---- callbacks: Keras's own, plus the three it lacks (callbacks.py) --------------
    history_path = out / HISTORY_FILE
    if initial_epoch:
        _truncate_history(history_path, initial_epoch)
    plateau = schedule.PlateauScaleCallback(
        peak_lr=tc["learning_rate"], monitor=cc["reduce_lr"]["monitor"], factor=cc["reduce_lr"]["factor"],
        patience=cc["reduce_lr"]["patience"], min_lr=cc["reduce_lr"]["min_lr"])
    early = keras.callbacks.EarlyStopping(
        monitor=cc["early_stopping"]["monitor"], patience=cc["early_stopping"]["patience"],
        restore_best_weights=cc["early_stopping"]["restore_best_weights"])
    best = keras.callbacks.ModelCheckpoint(out / BEST_MODEL, monitor=cc["checkpoint_monitor"], save_best_only=True)
    csv_logger = keras.callbacks.CSVLogger(str(history_path), append=bool(initial_epoch))
    stop = cb.StopOnSignal()
    callbacks = [
        plateau,  # first: puts learning_rate into the logs and lowers the scale before anything saves
        early,
        best,
        keras.callbacks.ModelCheckpoint(str(out / cb.CHECKPOINT_PATTERN)),  # every epoch (Keras numbers from 1)
        csv_logger,
        cb.EpochProgress(epochs, len(x_train)),
        cb.ResumeState(out, early, best, plateau, keep_last=cc["keep_last_checkpoints"],
                       restore=state if initial_epoch else None),
        stop,  # last: a SIGTERM at the end of an epoch stops only after the commit above
    ]
    tensorboard = None
    if cc["tensorboard"] and not _tensorboard_installed():
        print("TensorBoard logging: off, the `tensorboard` package is not installed (pip install tensorboard)")
    elif cc["tensorboard"]:
        tensorboard = keras.callbacks.TensorBoard(log_dir=str(out / "tensorboard"))
        callbacks.insert(5, tensorboard)
    callbacks.append(cb.BatchBar(steps))

    # ---- fit ----------------------------------------------------------------------------
    if initial_epoch >= epochs or (state or {}).get("stopped_early"):
        print(f"resume: the run already finished (epoch {initial_epoch}); nothing to train")
    else:
        train_ds = data.make_dataset(x_train, y_train, batch, shuffle=True, seed=tc["seed"] + initial_epoch)
        val_ds = data.make_dataset(x_val, y_val, batch, shuffle=False)
        print(f"training epochs {initial_epoch + 1}..{epochs} -> {out}")
        try:
            model.fit(train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=initial_epoch,
                      class_weight=class_weight, callbacks=callbacks, verbose=0,
                      shuffle=False)  # the dataset reshuffles itself every epoch
        except cb.TrainingInterrupted as exc:
            csv_logger.on_train_end()
            if tensorboard is not None:
                tensorboard.on_train_end()
            stop.restore_handlers()
            done = (cb.read_state(out) or {}).get("epoch", 0)
            saved = f"epochs 1..{done} are saved in {out}" if done else "no epoch had completed yet"
            print(f"stopped by {exc} during epoch {done + 1}; {saved}. Continue with the same command and --resume")
            return EXIT_SIGTERM
        if early.stopped_epoch:
            print(f"early stopping after epoch {early.stopped_epoch + 1}: {early.monitor} did not improve "
                  f"for {early.patience} epochs (best at epoch {early.best_epoch + 1})")
        if stop.received is not None:
            print(f"stopped by SIGTERM after epoch {cb.read_state(out)['epoch']}; continue with --resume")
            return EXIT_SIGTERM

    # ---- evaluate the best checkpoint on the test split ----------------------------------
    if evaluate:
        from trainer import evaluate as evaluate_lib

        best_path = out / BEST_MODEL
        if not best_path.is_file():
            print("no best_model.keras was written; skipping evaluation")
            return 0
        metrics = evaluate_lib.evaluate_file(cache_dir, best_path, out)
        if metrics is not None:
            print(f"test accuracy: {metrics['accuracy']:.4f}")
    return 0


def _tensorboard_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def _read_info(out: Path) -> dict:
    import json

    path = out / INFO_FILE
    if not path.is_file():
        raise UsageError(f"resume: {path} is missing; this folder was not written by `trainer train`")
    return json.loads(path.read_text())


def _truncate_history(path: Path, completed_epochs: int) -> None:
    """Drop CSV rows of epochs that were not committed (a kill between the row and the commit)."""
    if not path.is_file():
        return
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    kept = [r for r in body if r and int(float(r[0])) < completed_epochs]
    if len(kept) == len(body):
        return
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(kept)
    from trainer.cache import atomic_write_bytes

    atomic_write_bytes(path, buf.getvalue().encode())
    print(f"resume: dropped {len(body) - len(kept)} history row(s) of an uncommitted epoch", file=sys.stderr)
