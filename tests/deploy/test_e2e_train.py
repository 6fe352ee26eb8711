"""The whole path for real: synthetic videos -> up, sync, start -> logs --follow -> fetch.

The "remote" is this machine behind the fixture's sshd; the run is the real trainer
(extract + 2 epochs of configs/demo.yaml) executed from the synced code in a
workspace whose path has spaces, quotes and `$(...)` in it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
import sys

import pytest


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_deploy_logs_fetch_trains_for_real_and_results_are_verified(project):
    shutil.rmtree(project.cwd / "dataset")  # the fixture's two tiny clips: this test synthesises its own
    subprocess.run([sys.executable, "-m", "trainer", "synth", "--out", str(project.cwd / "dataset"),
                    "--videos", "16", "--seed", "0"], check=True, capture_output=True, env=project.env(),
                   timeout=300)
    for cmd in ("up", "sync", "start"):  # = make deploy
        r = project.run(cmd)
        assert r.returncode == 0, (cmd, r.stdout, r.stderr)
    run = project.state()["current_run"]

    logs = project.run("logs", "--follow", "-n", "1000", timeout=600)
    assert logs.returncode == 0, logs.stdout[-3000:] + logs.stderr
    assert "[deploy]" in logs.stdout and "extract" in logs.stdout
    assert "training epochs 1..2" in logs.stdout
    assert "finished (exit code 0)" in logs.stderr

    fetch = project.run("fetch")
    assert fetch.returncode == 0, fetch.stderr
    local, remote = project.cwd / "runs" / run, project.remote_run_dir(run)
    recorded = project.state()["runs"][run]["fetches"][-1]
    assert recorded["final"] is True
    names = ["best_model.keras", "training_history.csv", "metrics.json", "train.log"]
    names += [str(p.relative_to(remote)) for p in (remote / "plots").glob("*.png")]
    names += [str(p.relative_to(remote)) for p in (remote / "tensorboard").rglob("*") if p.is_file()]
    assert any(n.startswith("plots/") for n in names) and any(n.startswith("tensorboard/") for n in names)
    for name in names:
        assert digest(local / name) == digest(remote / name) == recorded["files"][name], name
    assert not list(local.glob("checkpoint_epoch_*.keras"))  # checkpoints stay on the host

    metrics = json.loads((local / "metrics.json").read_text())
    assert metrics["samples"] >= 1 and 0.0 <= metrics["accuracy"] <= 1.0
    history = list(csv.DictReader((local / "training_history.csv").open()))
    assert [int(float(r["epoch"])) for r in history][-1] in (1, 2) and len(history) == 2
    assert {"accuracy", "loss", "val_accuracy", "val_loss", "learning_rate"} <= set(history[0])

    status = json.loads(project.run("status", "--json").stdout)
    assert status["state"] == "finished" and status["exit_code"] == 0
    assert status["epochs_done"] == 2
    losses = [float(r["val_loss"]) for r in history]
    best = losses.index(min(losses))  # the first lowest val_loss: the epoch best_model.keras holds
    assert status["best_model"] == {"epoch": best + 1, "val_loss": losses[best],
                                    "val_accuracy": float(history[best]["val_accuracy"])}
    assert status["last_fetch_at"]
    assert project.run("down").returncode == 0
