"""PNG plots of a run: loss, accuracy and learning rate per epoch, and the confusion matrix.

The curves come from training_history.csv alone, so train writes them at the end of every
run (with or without an evaluation); the confusion matrix needs metrics.json.
"""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; works on a headless instance
import matplotlib.pyplot as plt  # noqa: E402


def read_history(path: Path) -> dict[str, list[float]]:
    if not Path(path).is_file():
        return {}
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            try:
                cols.setdefault(key, []).append(float(value))
            except (TypeError, ValueError):
                cols.setdefault(key, []).append(float("nan"))
    return cols


def _curve(out: Path, hist: dict, keys: list[str], title: str, log_y: bool = False) -> Path | None:
    present = [k for k in keys if k in hist]
    if not present or "epoch" not in hist:
        return None
    epochs = [e + 1 for e in hist["epoch"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in present:
        ax.plot(epochs, hist[key], label=key, marker="o" if len(epochs) < 30 else None)
    ax.set_xlabel("epoch")
    ax.set_title(title)
    if log_y:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def confusion_matrix_png(out: Path, metrics: dict) -> Path:
    cm = metrics["confusion_matrix"]["rows_true_cols_predicted"]
    labels = metrics["confusion_matrix"]["labels"]
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = max(max(r) for r in cm) or 1
    for i, row in enumerate(cm):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > peak / 2 else "black")
    ax.set_title(f"{metrics.get('split', 'test')} accuracy {metrics['accuracy']:.3f}")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def write_curves(out_dir: Path, history: Path) -> list[Path]:
    """plots/{loss,accuracy,learning_rate}.png from a training_history.csv (none if it has no rows)."""
    plots = Path(out_dir) / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    hist = read_history(history)
    written = [
        _curve(plots / "loss.png", hist, ["loss", "val_loss"], "loss"),
        _curve(plots / "accuracy.png", hist, ["accuracy", "val_accuracy"], "accuracy"),
        _curve(plots / "learning_rate.png", hist, ["learning_rate"], "learning rate", log_y=True),
    ]
    return [p for p in written if p is not None]


def write_all(out_dir: Path, metrics: dict, history: Path) -> list[Path]:
    return write_curves(out_dir, history) + [confusion_matrix_png(Path(out_dir) / "plots" / "confusion_matrix.png",
                                                                  metrics)]


def timeline_png(out: Path, windows: list[tuple[float, float, float]], threshold: float, segments: list[dict],
                 title: str = "", duration_s: float | None = None, stopped: str | None = None) -> Path:
    """Violent probability over a long video: one point per window (at its centre), the
    threshold, and the merged segments shaded. Written to a temporary file, then renamed."""
    import os
    import tempfile

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(9, 3))
    for seg in segments:
        ax.axvspan(seg["start_s"], seg["end_s"], color="tab:red", alpha=0.18, lw=0)
    centres = [(s + e) / 2 for s, e, _ in windows]
    ax.plot(centres, [p for _, _, p in windows], color="tab:red", lw=1.5,
            marker="." if len(windows) < 200 else None, label="violent probability (window centre)")
    ax.axhline(threshold, color="0.3", ls="--", lw=1, label=f"threshold {threshold:g}")
    end = duration_s or (max(e for _, e, _ in windows) if windows else 1.0)
    ax.set_xlim(0, end)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("time in the video (s)")
    ax.set_ylabel("P(violent)")
    label = f"{title}: {len(segments)} violent segment(s)" if title else f"{len(segments)} violent segment(s)"
    if stopped:
        label += " (decoding stopped early)"
    ax.set_title(label)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=90)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; a plot is an ordinary file
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return out


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask
