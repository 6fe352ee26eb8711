"""`python -m trainer export --model FILE --out DIR`: the model as a TensorFlow SavedModel.

Keras's own `model.export(format="tf_saved_model")` writes a SavedModel whose `serve`
endpoint takes the feature sequence, float16 [batch, frames, feature_dim] (the cache's
dtype), and returns the class probabilities float32 [batch, 2] in CLASSES order
(nonviolent, violent). model_info.json goes beside it: it says how the features are
made (backbone, weights, image size, frames, sampling rule), so the model can be served
with TensorFlow alone, without this repository and without Keras's custom layers.

The folder appears whole or not at all: the export is written into a temporary folder
next to DIR, its files fsync'd, then renamed to DIR.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from trainer.errors import UsageError


def export(model_path: Path, out: Path) -> Path:
    from trainer.evaluate import load_model
    from trainer.predict import read_model_info

    model_path, out = Path(model_path), Path(out)
    if not model_path.is_file():
        raise UsageError(f"--model {model_path}: no such file")
    info_path = model_path.parent / "model_info.json"
    read_model_info(model_path)  # a one-line error when it is missing
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out} already exists and is not an empty folder; choose a new one")
    out.parent.mkdir(parents=True, exist_ok=True)
    model = load_model(model_path)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the export is an ordinary folder
        model.export(str(tmp), format="tf_saved_model", verbose=False)
        shutil.copyfile(info_path, tmp / "model_info.json")
        _fsync_tree(tmp)
        if out.exists():
            out.rmdir()  # empty (checked above): rename cannot replace a folder on every system
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_tree(root: Path) -> None:
    for dirpath, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as fh:
                os.fsync(fh.fileno())
        fd = os.open(dirpath, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def run(args) -> int:
    out = export(Path(args.model), Path(args.out))
    print(f"wrote {out}: TensorFlow SavedModel (tf.saved_model.load(...).serve(features) -> "
          f"[P(nonviolent), P(violent)]) and model_info.json", file=sys.stdout)
    return 0
