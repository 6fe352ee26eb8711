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

# What a resumed run must share with the run it continues: the schedule's step counts,
# the loss and the model are frozen into the checkpoint, and the data must be the same.
RESUME_TRAIN_KEYS = ("epochs", "batch_size", "learning_rate", "min_learning_rate", "warmup_epochs", "clipnorm",
                     "focal_loss", "focal_alpha", "focal_gamma", "label_smoothing", "class_weights", "seed")

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
    from trainer import train_checks  # the cache, the config against it, --output-dir: before TensorFlow
    from trainer.paths import folder_to_write

    warnings = train_checks.check_inputs(args, cfg)
    if getattr(args, "dry_run", False):
        return train_checks.dry_run_report(args, cfg)
    out = folder_to_write(args.output_dir, "--output-dir")

    from trainer import runlog

    with runlog.tee(out / "train.log"):
        for line in warnings:
            print(line, file=sys.stderr)
        return train(cfg, args.cache_dir, out, resume=args.resume, evaluate=not args.no_evaluate)


def train(cfg: dict, cache_dir, out: Path, resume: bool = False, evaluate: bool = True, strategy=None) -> int:
    import keras

    from trainer import callbacks as cb
    from trainer.backbone_settings import model_info_entry
    from trainer import checkpoints, data, device_choice, losses, runtime, schedule
    from trainer.metrics import LabelledAccuracy  # noqa: F401  registered before a checkpoint is loaded
    from trainer.model import build_model, cudnn_eligible, lstm_layers, synchronize_batch_norm
    from trainer.optimizer import upgrade_loss_scaling
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
    settings = run_settings(cfg, meta, steps, FeatureCache(cache_dir).ok_records("train"))
    info = _read_info(out) if initial_epoch else None
    if initial_epoch:
        check_resume(info, settings, out)
    checkpoints.remove_stale_temporaries(out)
    print(f"cache: {cache_dir}  backbone {meta.get('backbone')} ({meta.get('weights')}), "
          f"{frames} frames x {dim} features, {x_train.dtype}")
    print(f"data: {len(x_train)} train / {len(x_val)} val videos; global batch {batch} -> {steps} steps per epoch")

    class_weight = data.balanced_class_weights(y_train) if tc["class_weights"] else None

    # ---- devices, precision -----------------------------------------------------------
    def time_devices(devices: list[str]):
        """train.gpus auto: real training steps of this run's model and data on `devices`."""
        per = 1 if len(devices) > 1 else execution_steps(steps, tc["steps_per_execution"])
        with runtime.strategy_for(devices).scope():
            probe = compile_model(build_model(frames, dim, cfg["model"]), cfg, steps,
                                  keras.mixed_precision.global_policy().name == "mixed_float16",
                                  jit=False, per_call=per)  # XLA: off on GPUs for these cuDNN LSTMs (decide_jit)
        return device_choice.time_training(
            probe, lambda n: data.make_train_dataset(x_train, y_train, batch, tc["seed"], 0, n), steps, batch, per,
            class_weight)

    recorded_devices = ((_read_info_if_any(out) or {}).get("run") or {}).get("devices") if resume else None
    rt = runtime.setup(tc["gpus"], tc["mixed_precision"], strategy,
                       choose=lambda visible: device_choice.choose(visible, batch, time_devices, recorded_devices))
    # Seeds what is built here (a fresh model's weights and dropout generators); on resume
    # the generators' states come back from resume_state.json (callbacks.ResumeState).
    keras.utils.set_random_seed(tc["seed"])
    print(f"devices: {runtime.describe(rt)}" + (f" ({batch / rt.replicas:g} samples per replica per step)"
                                               if rt.replicas > 1 else "") + f"; {rt.devices_reason}")
    if rt.replicas > 1 and batch % rt.replicas:
        raise UsageError(f"train.batch_size {batch} does not split evenly over {rt.replicas} replicas (each GPU "
                         f"takes an equal share of the global batch): use a multiple of {rt.replicas}, or --gpus 1")
    print(f"mixed precision: {rt.mixed_precision_reason}")
    settings["precision"] = rt.policy
    settings["devices"] = rt.choice.record() if rt.choice is not None else {
        "setting": tc["gpus"], "chosen": rt.replicas, "devices": rt.devices, "reason": rt.devices_reason}
    if initial_epoch:
        check_resume_precision(info, out / state["checkpoint"], rt, out)

    # ---- class weights ("balanced"), logged and really passed to fit ------------------
    counts = {CLASSES[c]: int((y_train == c).sum()) for c in range(len(CLASSES))}
    if class_weight:
        print("class weights (balanced): " + ", ".join(
            f"{CLASSES[c]} {w:.3f} ({counts[CLASSES[c]]} videos)" for c, w in class_weight.items()))
    else:
        print(f"class weights: off ({counts})")

    # ---- steps per execution: several train steps per call into the graph -------------
    # A divisor of the steps per epoch, so that no call straddles two epochs (Keras would
    # otherwise pull the next epoch's batches into this one).
    if rt.replicas > 1:
        # Measured under a 2-replica MirroredStrategy (TF 2.21, Keras 3.15): the multi-step
        # while loop fails with "You must feed a value for placeholder tensor
        # while/cond/Placeholder" on the first call, so one step per call there.
        per_call = 1
        print(f"steps per execution: 1 (Keras's multi-step loop fails under a MirroredStrategy with "
              f"{rt.replicas} replicas)")
    else:
        per_call = execution_steps(steps, tc["steps_per_execution"])
        print(f"steps per execution: {per_call} (the largest divisor of {steps} steps per epoch up to "
              f"train.steps_per_execution {tc['steps_per_execution']}); SIGTERM is seen after each execution")

    # ---- model, loss, optimizer (built in the strategy's scope) -----------------------
    with rt.strategy.scope():
        if initial_epoch:
            model = keras.models.load_model(out / state["checkpoint"])
            print(f"resume: {state['checkpoint']} (epoch {initial_epoch}/{epochs}, "
                  f"optimizer step {int(model.optimizer.iterations.numpy())})")
            # checkpoints written before batch norm was synchronized and loss scaling replica-safe
            if synchronize_batch_norm(model) or upgrade_loss_scaling(model.optimizer):
                print("resume: the checkpoint predates synchronized batch norm / replica-safe loss scaling; "
                      "both are on from here")
            jit_reason = f"{'on' if model.jit_compile else 'off'} (as the run started)"
            model.steps_per_execution = per_call  # not part of the saved compile config
            if tuple(model.input_shape[1:]) != (frames, dim):
                raise UsageError(f"resume: the checkpoint expects {tuple(model.input_shape[1:])} features but the "
                                 f"cache holds {(frames, dim)}; resume with the cache the run started on")
        else:
            model = build_model(frames, dim, cfg["model"])
            jit, jit_reason = runtime.decide_jit(rt, tc["xla"], model)
            compile_model(model, cfg, steps, rt.mixed_precision, jit, per_call)
    lr_schedule = schedule.find_scaled_schedule(model.optimizer)
    eligible = all(cudnn_eligible(layer) for layer in lstm_layers(model))
    print(f"model: {model.count_params():,} parameters ({cfg['model']['lstm_layers']} x BiLSTM({cfg['model']['lstm_units']}) "
          f"+ attention + dense {cfg['model']['dense_units']}); LSTMs cuDNN-eligible: {'yes' if eligible else 'NO'}"
          + (" (the traced train step is checked for the cuDNN op after the first epoch)" if rt.on_gpu else " (no GPU)"))
    print(f"XLA: {jit_reason}")
    print(f"loss: {losses.describe(tc)}; optimizer Adam, global clipnorm {tc['clipnorm']} on the gradient summed "
          "over all replicas")
    print(f"learning rate: {schedule.describe(lr_schedule, steps, epochs)}; ReduceLROnPlateau scales it "
          f"(scale now {float(lr_schedule.scale.numpy()):g})")
    if not initial_epoch:
        atomic_write_json(out / INFO_FILE, {
            "cache_meta": meta, "cache_dir": str(Path(cache_dir).resolve()), "classes": list(CLASSES), "config": cfg,
            "backbone": model_info_entry(meta),  # what predict builds (trainer.backbone.from_model_info)
            "parameters": int(model.count_params()), "steps_per_epoch": steps, "run": settings,
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
    # Early stopping only decides WHEN to stop; the model kept is best_model.keras
    # (checkpoint_monitor), the file evaluate and predict load. Restoring "best weights"
    # into memory at the end would change nothing anybody uses (config.py refuses it).
    early = keras.callbacks.EarlyStopping(
        monitor=cc["early_stopping"]["monitor"], patience=cc["early_stopping"]["patience"],
        restore_best_weights=False)
    epoch_pattern = str(out / cb.CHECKPOINT_PATTERN)
    best = checkpoints.BestModelCheckpoint(out / BEST_MODEL, epoch_pattern, monitor=cc["checkpoint_monitor"])
    csv_logger = keras.callbacks.CSVLogger(str(history_path), append=bool(initial_epoch))
    stop = cb.StopOnSignal()
    callbacks = [
        plateau,  # first: puts learning_rate into the logs and lowers the scale before anything saves
        early,
        checkpoints.AtomicModelCheckpoint(epoch_pattern),  # every epoch (Keras numbers from 1)
        best,  # after it: an improving epoch's checkpoint becomes best_model.keras by a hard link
        csv_logger,
        cb.EpochProgress(epochs, len(x_train)),
        cb.ResumeState(out, early, best, plateau, keep_last=cc["keep_last_checkpoints"],
                       restore=state if initial_epoch else None),
        stop,  # last: a SIGTERM at the end of an epoch stops only after the commit above
    ]
    if rt.on_gpu:
        callbacks.insert(0, cb.CudnnReport(len(lstm_layers(model))))
    tensorboard = None
    if cc["tensorboard"] and not _tensorboard_installed():
        print("TensorBoard logging: off, the `tensorboard` package is not installed (pip install tensorboard)")
    elif cc["tensorboard"]:
        tensorboard = cb.EpochRateTensorBoard(log_dir=str(out / "tensorboard"))
        callbacks.insert(5, tensorboard)
    if sys.stdout.isatty():  # a per-batch hook makes Keras wait for every execution: only when seen
        callbacks.append(cb.BatchBar(steps))

    # ---- fit ----------------------------------------------------------------------------
    if initial_epoch >= epochs or (state or {}).get("stopped_early"):
        print(f"resume: the run already finished (epoch {initial_epoch}); nothing to train")
    else:
        train_ds = data.make_train_dataset(x_train, y_train, batch, tc["seed"], initial_epoch, epochs)
        val_ds = data.make_eval_dataset(x_val, y_val, batch, rt.replicas)
        print(f"training epochs {initial_epoch + 1}..{epochs} -> {out}")
        try:
            model.fit(train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=initial_epoch,
                      steps_per_epoch=steps, class_weight=class_weight, callbacks=callbacks, verbose=0,
                      shuffle=False)  # the dataset holds each epoch's own order
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

    # ---- evaluate the best checkpoint on the test split (else val); curves in any case ----
    if not evaluate or not (out / BEST_MODEL).is_file():
        from trainer import plots

        plots.write_curves(out, out / HISTORY_FILE)
    if evaluate:
        from trainer import evaluate as evaluate_lib

        best_path = out / BEST_MODEL
        if not best_path.is_file():
            print("no best_model.keras was written; skipping evaluation")
            return 0
        metrics = evaluate_lib.evaluate_file(cache_dir, best_path, out)
        if metrics is not None:
            print(f"{metrics['split']} accuracy: {metrics['accuracy']:.4f}")
    return 0


def compile_model(model, cfg: dict, steps: int, mixed_float16: bool, jit: bool, per_call: int):
    """Compile the classifier as the run trains it (call in the strategy's scope)."""
    from trainer import losses, schedule
    from trainer.metrics import LabelledAccuracy
    from trainer.optimizer import build_optimizer

    tc = cfg["train"]
    lr = schedule.warmup_cosine(steps, tc["epochs"], tc["warmup_epochs"], tc["learning_rate"], tc["min_learning_rate"])
    # clipping of the summed gradient of all replicas; loss scaling that skips on all of them (optimizer.py)
    optimizer = build_optimizer(lr, tc["clipnorm"], mixed_float16)
    # Keras's accuracy, blind to the rows that pad a validation batch (metrics.py)
    model.compile(optimizer=optimizer, loss=losses.build_loss(tc), metrics=[LabelledAccuracy()], jit_compile=jit,
                  steps_per_execution=per_call)
    return model


def execution_steps(steps_per_epoch: int, wanted: int) -> int:
    return max(d for d in range(1, min(wanted, steps_per_epoch) + 1) if steps_per_epoch % d == 0)


def run_settings(cfg: dict, meta: dict, steps: int, train_records: list[dict]) -> dict:
    """The settings a resume must not change, flat and named as the user sets them."""
    import hashlib
    import json

    out = {f"train.{k}": cfg["train"][k] for k in RESUME_TRAIN_KEYS}
    out.update({f"model.{k}": v for k, v in sorted(cfg["model"].items())})
    out["steps per epoch"] = steps
    out["cache fingerprint (feature settings)"] = meta.get("fingerprint")
    identity = json.dumps(sorted((r["path"], r.get("key"), r["label"]) for r in train_records)).encode()
    out["training set"] = f"{len(train_records)} videos, sha256 {hashlib.sha256(identity).hexdigest()[:16]}"
    return out


def check_resume(info: dict, now: dict, out: Path) -> None:
    """Refuse, with one line, a resume whose settings differ from the recorded run's."""
    recorded = info.get("run")
    if recorded is None:  # a run from before these were recorded: only the epoch count is known
        recorded = {"train.epochs": info["config"]["train"]["epochs"]}
    for key in now:  # in the order run_settings names them (the JSON file is sorted)
        if key not in recorded:
            continue
        was = recorded[key]
        if now[key] != was:
            hint = (f"resume with --epochs {was}" if key == "train.epochs" else
                    f"resume with the run's settings (see {out / INFO_FILE}) or train into a new --output-dir")
            raise UsageError(f"resume: {key} is {now[key]} but the run in {out} was started with {was} "
                             f"(the checkpoint's schedule, loss and model are laid out for it); {hint}")


def check_resume_precision(info: dict, checkpoint: Path, rt, out: Path) -> None:
    """Refuse, with one line, a resume in another effective precision than the run's.

    Keras loads a mixed_float16 checkpoint's optimizer into a float32 one (or the reverse)
    by skipping all its variables with a warning: the step count restarts at 0 (warmup
    again), Adam's moments and the loss scale are gone. Runs from before the precision was
    recorded are judged by the checkpoint itself (a loss-scale optimizer: mixed_float16).
    """
    from trainer.checkpoints import saved_precision

    was = (info.get("run") or {}).get("precision") or saved_precision(checkpoint)
    now = rt.policy
    if was is None or was == now:
        return
    hint = ("resume on a GPU with tensor cores (compute capability 7.0 or newer) and train.mixed_precision true"
            if was == "mixed_float16" else "resume with --no-mixed-precision")
    raise UsageError(f"resume: precision is {now} but the run in {out} was started with {was} (the checkpoint's "
                     f"optimizer state - loss scale, Adam moments, step count - does not load across precisions); "
                     f"{hint}, or train into a new --output-dir")


def _tensorboard_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def _read_info_if_any(out: Path) -> dict | None:
    import json

    try:
        return json.loads((out / INFO_FILE).read_text())
    except (OSError, ValueError):
        return None


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
