"""Model files that are never half-written: temporary file in the same folder, fsync, os.replace.

Keras's `model.save` writes the `.keras` zip in place, so a kill (SIGKILL, OOM, a
preempted instance) during a save leaves a truncated file where the previous, valid one
was, and best_model.keras can be lost that way after hours of training. Every model file
the trainer writes (best, per-epoch, what resume loads) goes through `atomic_save`:
the reader of a path sees either the previous complete file or the new complete one.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import keras

TMP_PREFIX = ".tmp-"


@contextmanager
def _replacing(path: Path, kind: str = ""):
    """A temporary name beside `path` for the caller to fill; on success it is fsync'd and
    renamed over `path`, on any failure (a kill between the two is no failure: it leaves a
    temporary that remove_stale_temporaries clears) it is removed and `path` is untouched."""
    # Keras insists on the .keras suffix, so the temporary name keeps it; the leading
    # dot and prefix keep it out of `checkpoint_epoch_*.keras` globs.
    tmp = path.with_name(f"{TMP_PREFIX}{os.getpid()}-{kind}{path.name}")
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)  # the rename itself survives a power cut


def atomic_save(model, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _replacing(path) as tmp:
        model.save(tmp, overwrite=True)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a directory; the rename is still atomic
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: str | Path) -> int:
    """Temporary files left by a process killed mid-save (never a complete model)."""
    n = 0
    for tmp in Path(folder).glob(f"{TMP_PREFIX}*.keras"):
        tmp.unlink(missing_ok=True)
        n += 1
    return n


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """Keras's ModelCheckpoint (monitor, mode, save_best_only, file name pattern), saving
    through atomic_save. Only the write is replaced; when to save stays Keras's decision
    (`_should_save_model`, which also updates `best`)."""

    def _save_model(self, epoch, batch, logs):
        filepath = self._get_file_path(epoch, batch, logs)
        if self._should_save_model(epoch, batch, logs, filepath):
            if self.save_weights_only:  # not used by the trainer; kept correct anyway
                self.model.save_weights(filepath, overwrite=True)
            else:
                atomic_save(self.model, filepath)


def atomic_link(source: str | Path, path: str | Path) -> None:
    """`path` becomes the same file as `source` (a hard link, put in place by os.replace):
    no second serialisation, no second write. Falls back to a copy where the file system
    has no hard links."""
    import shutil

    source, path = Path(source), Path(path)
    with _replacing(path, "link-") as tmp:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)


class BestModelCheckpoint(AtomicModelCheckpoint):
    """best_model.keras with save_best_only. When the epoch's own checkpoint was just
    written (the per-epoch callback runs first), the best model IS that file: it is
    hard-linked instead of serialising and writing the same ~63 MB a second time."""

    def __init__(self, filepath, epoch_pattern: str, **kwargs):
        super().__init__(filepath, save_best_only=True, **kwargs)
        self.epoch_pattern = epoch_pattern

    def _save_model(self, epoch, batch, logs):
        filepath = self._get_file_path(epoch, batch, logs)
        if not self._should_save_model(epoch, batch, logs, filepath):
            return
        epoch_file = Path(self.epoch_pattern.format(epoch=epoch + 1))
        if epoch_file.is_file():
            atomic_link(epoch_file, filepath)
        else:
            atomic_save(self.model, filepath)


def saved_precision(path: str | Path) -> str | None:
    """The precision a .keras checkpoint was trained in, from its own config: mixed_float16
    when its optimizer scales the loss (Keras's or the trainer's LossScaleOptimizer), else
    float32; None when the file cannot be read (the load that follows will say why)."""
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            config = json.loads(z.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    optimizer = (config.get("compile_config") or {}).get("optimizer") or {}
    name = optimizer.get("class_name", "") if isinstance(optimizer, dict) else ""
    return "mixed_float16" if name.endswith("LossScaleOptimizer") else "float32"
