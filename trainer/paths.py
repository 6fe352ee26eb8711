"""The paths a user passes, checked before anything heavy loads: one line and exit 2 for each mistake.

A file where a folder belongs (`--cache-dir`, `--output-dir`), a folder where files belong
(`predict DIR`), a missing input: these take microseconds to see, so they are seen before
TensorFlow is imported (seconds) rather than as a traceback after it.
"""

from __future__ import annotations

from pathlib import Path

from trainer.errors import UsageError


def folder_to_write(path: str | Path, flag: str) -> Path:
    """`path` as a folder that exists afterwards (created with its parents), or a one-line UsageError."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path} is a file, not a folder: pass a folder (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a parent that is a file, no permission, a read-only file system
        raise UsageError(f"{flag} {path}: cannot create the folder ({exc.strerror or exc})") from None
    return path


def existing_folder(path: str | Path, flag: str, hint: str = "") -> Path:
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{flag} {path} does not exist" + (f" ({hint})" if hint else ""))
    if not path.is_dir():
        raise UsageError(f"{flag} {path} is a file, not a folder" + (f" ({hint})" if hint else ""))
    return path


def model_file(path: str | Path) -> Path:
    """A `.keras` model that exists and is a zip archive (what Keras 3 writes), checked without Keras.

    Keras itself answers a file that is not a zip with "File not found", which sends the
    user looking for a file that is right there.
    """
    import zipfile

    path = Path(path)
    if path.is_dir():
        raise UsageError(f"--model {path} is a folder: pass the model file (e.g. {path / 'best_model.keras'})")
    if not path.is_file():
        raise UsageError(f"--model {path}: no such file")
    if path.suffix.lower() == ".keras" and not zipfile.is_zipfile(path):
        size = path.stat().st_size
        raise UsageError(f"--model {path} is not a Keras model file: a .keras file is a zip archive and this "
                         f"one ({size:,} bytes) is not one (cut off while copying or fetching, or another format)")
    return path
