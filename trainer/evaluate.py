"""`python -m trainer evaluate`: test-split metrics -> metrics.json, and the plots.

Without a test split (RWF-2000 ships train/ and val/ only) the validation split is
evaluated instead, and metrics.json says so ("split": "val"): those figures are
optimistic, since best_model.keras was chosen on that split. A model is evaluated only on
a cache made with the feature settings recorded with it (model_info.json): the same
feature shape is not the same features. Metrics come from scikit-learn (accuracy, per-class precision / recall / F1, ROC AUC
on the violent probability, confusion matrix), the expected calibration error from
calibration.py (are the probabilities probabilities?); plots from plots.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from trainer import calibration
from trainer.cache import CLASSES, atomic_write_json
from trainer.errors import UsageError


def compute_metrics(y_true: np.ndarray, p_violent: np.ndarray, threshold: float = 0.5) -> dict:
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support, roc_auc_score

    y_pred = (p_violent >= threshold).astype(int)
    labels = list(range(len(CLASSES)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    # one class only in the test split: AUC is undefined (sklearn would warn and give nan)
    auc = float(roc_auc_score(y_true, p_violent)) if len(np.unique(y_true)) > 1 else None
    p_true = calibration.true_class_probability(y_true, p_violent)
    correct = y_pred == np.asarray(y_true)
    return {
        "expected_calibration_error": calibration.expected_calibration_error(y_true, p_violent),
        "calibration_bins": calibration.BINS,
        # how sure the model is when it is right (a loss that caps confidence shows here)
        "median_true_class_probability_correct": float(np.median(p_true[correct])) if correct.any() else None,
        "samples": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "roc_auc": auc,
        "threshold": threshold,
        "per_class": {
            CLASSES[i]: {"precision": float(precision[i]), "recall": float(recall[i]),
                         "f1": float(f1[i]), "support": int(support[i])}
            for i in labels
        },
        "confusion_matrix": {
            "labels": list(CLASSES),
            "rows_true_cols_predicted": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        },
    }


def load_model(path: Path):
    from trainer.paths import model_file

    model_file(path)  # missing, a folder, or not a zip: said before Keras (which would say "File not found")
    import keras

    import trainer.losses  # noqa: F401  registers the loss (a checkpoint loaded with compile=True needs it)
    import trainer.model  # noqa: F401  registers AttentionPooling for deserialisation
    import trainer.optimizer  # noqa: F401  registers ClippedAdam
    import trainer.schedule  # noqa: F401  registers ScaledSchedule

    from trainer.runtime import enable_memory_growth

    enable_memory_growth()  # loading starts TensorFlow on every GPU: share them (trainer/runtime.py)
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # a truncated or foreign file: the user must point elsewhere
        raise UsageError(f"--model {path}: cannot be loaded as a Keras model ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None


def check_inputs(cache_dir, model_path: Path) -> str:
    """Everything evaluate can check without TensorFlow; returns the split to evaluate."""
    from trainer import settings_check
    from trainer.cache import FeatureCache
    from trainer.paths import existing_folder, model_file

    model_file(model_path)
    existing_folder(cache_dir, "--cache-dir", "run `python -m trainer extract` first")
    meta = settings_check.cache_meta(cache_dir)
    info = settings_check.model_info(model_path, required=False)
    if info is None:
        print(f"note: no model_info.json next to {model_path}: its feature settings cannot be compared with the "
              f"cache's (only the feature shape is)", file=sys.stderr)
    else:
        diffs = settings_check.model_vs_cache(info, meta)
        if diffs:
            raise UsageError(f"the model was trained on features made with other settings than the cache in "
                             f"{cache_dir} ({'; '.join(diffs)}): evaluate with the cache it was trained on, or "
                             f"extract the test videos with its settings (model_info.json)")
    cache = FeatureCache(cache_dir)
    if cache.ok_records("test"):
        return "test"
    if cache.ok_records("val"):
        print("no test split in the cache: evaluating on the validation split instead (metrics.json says "
              "\"split\": \"val\"); best_model.keras was chosen on it, so these figures are optimistic")
        return "val"
    raise UsageError(f"the cache in {cache_dir} has no test or validation videos: nothing to evaluate")


def evaluate_file(cache_dir, model_path: Path, out_dir: Path, batch_size: int = 64) -> dict:
    split = check_inputs(cache_dir, model_path)  # before TensorFlow: one line for each mistake, at once
    from trainer import data, plots

    model = load_model(model_path)
    x, y, paths = data.load_split(cache_dir, split)
    expected = tuple(model.input_shape[1:])
    if tuple(x.shape[1:]) != expected:
        raise UsageError(f"the cache's features are {tuple(x.shape[1:])} but the model expects {expected}; "
                         "evaluate with the cache the model was trained on")
    p = model.predict(data.make_dataset(x, y, batch_size, shuffle=False), verbose=0)[:, CLASSES.index("violent")]
    metrics = compute_metrics(y, p)
    metrics["split"] = split
    metrics["model"] = str(model_path)
    metrics["cache_dir"] = str(cache_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "metrics.json", metrics)
    written = plots.write_all(out_dir, metrics, history=Path(model_path).parent / "training_history.csv")
    _print_report(metrics, out_dir, written)
    return metrics


def _print_report(m: dict, out_dir: Path, plots_written: list[Path]) -> None:
    auc = "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.4f}"
    print(f"{m['split']} split: {m['samples']} videos  accuracy {m['accuracy']:.4f}  ROC AUC {auc}")
    med = m["median_true_class_probability_correct"]
    print(f"  expected calibration error {m['expected_calibration_error']:.4f} ({m['calibration_bins']} bins; "
          f"0 = probabilities match the hit rate)  median p(true class) when correct "
          + ("n/a" if med is None else f"{med:.3f}"))
    for name, s in m["per_class"].items():
        print(f"  {name:<10} precision {s['precision']:.3f}  recall {s['recall']:.3f}  f1 {s['f1']:.3f}  ({s['support']} videos)")
    cmx = m["confusion_matrix"]["rows_true_cols_predicted"]
    print(f"  confusion (rows true, cols predicted {list(CLASSES)}): {cmx}")
    print(f"wrote {out_dir / 'metrics.json'}" + (f" and {len(plots_written)} plot(s) in {out_dir / 'plots'}" if plots_written else ""))


def run(args) -> int:
    from trainer.paths import folder_to_write

    model_path = Path(args.model)
    out_dir = folder_to_write(args.output_dir, "--output-dir") if args.output_dir else model_path.parent
    evaluate_file(args.cache_dir, model_path, out_dir)
    return 0
