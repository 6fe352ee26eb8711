"""No TensorFlow C++ log line in the trainer's output (issue 22, item 6), oneDNN left on.

The commands run as a user runs them: `python -m trainer ...` in a fresh process whose
environment does not set TF_CPP_MIN_LOG_LEVEL, asserting on what reaches its stderr.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
# absl / TensorFlow C++ lines: "I0000 00:00:1796583177.073706   16744 cpu_feature_guard.cc:227] ..."
CXX_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\]")
ABSL_LINE = "All log messages before absl::InitializeLog()"


def user_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def native_noise(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if CXX_LINE.match(ln) or ABSL_LINE in ln]


def test_known_noise_written_by_native_code_at_import_is_dropped_and_the_rest_kept(tmp_path):
    # What CUDA builds of TensorFlow print while they load, written to fd 2 as C++ does (not
    # through sys.stderr), plus a real error and a Python warning that must both still show.
    (tmp_path / "noisy_native.py").write_text(
        "import os, sys\n"
        "os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n')\n"
        "os.write(2, b'E0000 00:00:1712345678.123456   12345 cuda_dnn.cc:8310] Unable to register cuDNN factory: "
        "Attempting to register factory for plugin cuDNN when one has already been registered\\n')\n"
        "os.write(2, b'E0000 00:00:1712345678.123457   12345 cuda_executor.cc:1015] failed call to cuInit: "
        "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\\n')\n"
        "os.write(2, b'E0000 00:00:1712345678.2   12345 bfc_allocator.cc:1] Allocator ran out of memory\\n')\n"
        "print('a Python warning', file=sys.stderr)\n")
    code = ("import sys; from trainer import native_log; "
            "sys.meta_path.insert(0, native_log._FirstImport('noisy_native')); import noisy_native; "
            "print('imported')")
    env = {**user_env(), "PYTHONPATH": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "imported", r.stderr
    lines = r.stderr.splitlines()
    assert lines == ["E0000 00:00:1712345678.2   12345 bfc_allocator.cc:1] Allocator ran out of memory",
                     "a Python warning"], r.stderr


def test_the_trainer_sets_the_level_before_tensorflow_loads_and_leaves_onednn_on():
    code = ("import os, sys; from trainer.cli import main; from trainer import native_log; "
            "native_log.quiet_tensorflow(); import tensorflow as tf; "
            "print(os.environ['TF_CPP_MIN_LOG_LEVEL'], os.environ.get('TF_ENABLE_ONEDNN_OPTS'))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=user_env(), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["2", "None"] and native_noise(r.stderr) == [], r.stderr
    # a user who asks for TensorFlow's logs gets them: nothing is set or filtered then
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**user_env(), "TF_CPP_MIN_LOG_LEVEL": "0"},
                       capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["0", "None"]


@pytest.mark.slow
def test_synth_extract_train_evaluate_print_no_tensorflow_cxx_line(tmp_path):
    """`make demo`'s commands, with a Keras backbone in extract (the thumbnail one loads no TensorFlow)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "data": {"backbone": "efficientnetv2b0", "weights": "none", "image_size": 32, "frames": 4, "workers": 1},
        "model": {"lstm_units": 8, "lstm_layers": 1, "dense_units": [8, 8, 8]},
        "train": {"epochs": 1, "batch_size": 4, "warmup_epochs": 0},
        "callbacks": {"tensorboard": False}}))
    py = [sys.executable, "-m", "trainer"]
    steps = [
        [*py, "synth", "--out", str(tmp_path / "ds"), "--videos", "8", "--frames", "12", "--size", "32", "--quiet"],
        [*py, "extract", "--dataset-path", str(tmp_path / "ds"), "--cache-dir", str(tmp_path / "cache"),
         "--config", str(cfg), "--quiet"],
        [*py, "train", "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(tmp_path / "run"),
         "--config", str(cfg), "--no-evaluate"],
        [*py, "evaluate", "--cache-dir", str(tmp_path / "cache"), "--model", str(tmp_path / "run/best_model.keras")],
    ]
    for cmd in steps:
        r = subprocess.run(cmd, cwd=REPO, env=user_env(), capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{cmd[3]}:\n{r.stdout[-1500:]}\n{r.stderr[-1500:]}"
        assert native_noise(r.stderr) == [], f"{cmd[3]} printed TensorFlow's C++ log lines:\n{r.stderr}"
