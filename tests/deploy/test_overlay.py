"""remote.python: overlay — the trainer runs on a host Python that has TensorFlow but not OpenCV.

The base interpreter plays Vast's /venv/main: a venv whose site-packages has everything
of ours (TensorFlow, Keras, numpy, ...) except OpenCV. pip runs offline: the only wheel it
may install is OpenCV, repacked from this machine's installed copy (tests/deploy/wheels.py),
so a test that quietly let pip reinstall TensorFlow or numpy would fail for want of a wheel.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.wheels import wheel_from_installed

OPENCV = ("cv2", "opencv_python_headless")
# Vast's /venv/main has no vastai either (vast-ai/base-image Dockerfile:283-293 clones the CLI to /opt/vast-cli)
LEFT_OUT = OPENCV + ("vastai",)


def _site_packages(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


@pytest.fixture(scope="module")
def tf_base_python(tmp_path_factory) -> Path:
    """A venv with this test run's packages, OpenCV and vastai left out: TensorFlow (with its own Keras and
    TensorBoard) yes, cv2 no. CI runs it on tensorflow-cpu 2.19.0 too (the vendor's vastai/tensorflow tag)."""
    base = tmp_path_factory.mktemp("venv-main") / "main"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(base)], check=True)
    # the folder our TensorFlow lives in (in a developer's worktree, not necessarily purelib)
    ours = Path(importlib.util.find_spec("tensorflow").origin).parents[1]
    theirs = _site_packages(base / "bin" / "python")
    for entry in ours.iterdir():
        if not entry.name.startswith(LEFT_OUT) and not (theirs / entry.name).exists():
            (theirs / entry.name).symlink_to(entry)
    return base / "bin" / "python"


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wheelhouse")
    wheel_from_installed("opencv-python-headless", folder)
    return folder


def _dists(python: Path) -> dict[str, str]:
    """name -> version of every distribution `python` sees (the first on sys.path wins, as for imports)."""
    code = ("import importlib.metadata as md, json, re; seen = {}\n"  # names normalised as PEP 503 does
            "for d in md.distributions(): seen.setdefault(re.sub(r'[-_.]+', '-', d.metadata['Name'] or '').lower(), "
            "d.version)\n"
            "print(json.dumps(seen))")
    import json

    return json.loads(subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout)


def _imports(python: Path, module: str) -> bool:
    return subprocess.run([str(python), "-c", f"import {module}"], capture_output=True).returncode == 0


def test_the_stand_in_base_has_tensorflow_but_not_opencv(tf_base_python):
    assert _imports(tf_base_python, "tensorflow") is True
    assert _imports(tf_base_python, "cv2") is False
    assert _imports(tf_base_python, "vastai") is False


def test_overlay_refuses_a_base_without_tensorflow(project):
    project.write_config(remote={"python": "overlay", "base_python": "/usr/bin/python3"})
    if _imports(Path("/usr/bin/python3"), "tensorflow"):
        pytest.skip("the system Python here has TensorFlow")
    r = project.run("up")  # found before any byte of the dataset is sent
    assert r.returncode == 2
    line = r.stderr.strip().splitlines()[-1]
    assert "/usr/bin/python3 on 127.0.0.1 has no TensorFlow" in line and "auto-venv" in line


def test_base_python_without_overlay_is_a_config_mistake(project):
    project.write_config(remote={"python": "python3", "base_python": "/usr/bin/python3"})
    r = project.run("up")
    assert r.returncode == 2 and "only used with remote.python: overlay" in r.stderr


@pytest.mark.slow
def test_overlay_trains_for_real_without_reinstalling_tensorflow(project, tf_base_python, wheelhouse):
    subprocess.run([sys.executable, "-m", "trainer", "synth", "--out", str(project.cwd / "dataset"),
                    "--videos", "12", "--seed", "0"], check=True, capture_output=True, env=project.env(),
                   timeout=300)
    project.write_config(remote={"python": "overlay", "base_python": str(tf_base_python),
                                 "pip_args": ["--no-index", "--find-links", str(wheelhouse)]},
                         train={"config": project.config["train"]["config"], "args": ["--epochs", "1"]})
    base_before = _dists(tf_base_python)
    for cmd in ("up", "sync", "start"):
        r = project.run(cmd, timeout=600)
        assert r.returncode == 0, (cmd, r.stdout[-3000:], r.stderr[-3000:])
        if cmd == "sync":
            assert "building the overlay venv" in r.stdout
    logs = project.run("logs", "--follow", "-n", "1000", timeout=600)
    assert "finished (exit code 0)" in logs.stderr, logs.stdout[-3000:]

    venv = project.workspace / "venv"
    site = _site_packages(venv / "bin" / "python")
    added = sorted(p.name for p in site.iterdir() if p.name.endswith(".dist-info"))
    assert [n for n in added if n.startswith("opencv_python_headless")], added  # what the base lacked
    assert not [n for n in added if n.lower().startswith(("tensorflow", "keras", "numpy"))], added
    assert not (site / "tensorflow").exists()
    # the base is untouched, and the venv runs on the base's own TensorFlow, Keras and TensorBoard
    # (on TF 2.19 that is tensorboard 2.19: `tensorflow 2.19.0` requires tensorboard~=2.19.0)
    assert _dists(tf_base_python) == base_before
    seen = _dists(venv / "bin" / "python")
    assert base_before.get("tensorflow-cpu") or base_before.get("tensorflow")
    assert base_before.get("keras") and base_before.get("tensorboard") and base_before.get("numpy")
    for name in ("tensorflow", "tensorflow-cpu", "keras", "tensorboard", "numpy"):
        assert seen.get(name) == base_before.get(name), (name, seen.get(name), base_before.get(name))
    assert (project.workspace / "runs" / project.state()["current_run"] / "best_model.keras").is_file()

    again = project.run("sync", timeout=300)  # nothing changed: the overlay is not rebuilt
    assert again.returncode == 0 and "overlay venv up to date" in again.stdout


@pytest.mark.slow
def test_on_a_vendor_shaped_base_the_watchdog_guards_the_run_and_stops_at_max_hours(vast, tf_base_python,
                                                                                   wheelhouse):
    """Provider vast with the overlay on a base like Vast's /venv/main (TensorFlow with its own Keras and
    TensorBoard, no OpenCV, no vastai): the watchdog `up` installs is alive through sync and start, and
    once the run trains past max_hours it stops the instance with the instance's own key."""
    import json
    import time

    project = vast.project
    subprocess.run([sys.executable, "-m", "trainer", "synth", "--out", str(project.cwd / "dataset"),
                    "--videos", "12", "--seed", "0"], check=True, capture_output=True, env=project.env(), timeout=300)
    project.write_config(remote={"python": "overlay", "base_python": str(tf_base_python),
                                 "pip_args": ["--no-index", "--find-links", str(wheelhouse)]},
                         train={"config": project.config["train"]["config"], "args": ["--epochs", "1"]})
    # max_hours is already behind it once rented; with nothing training the watchdog leaves one grace
    # period for a fetch, so it is the run that makes the cap stop the instance
    vast.set(max_hours=0.0001, idle_grace_minutes=60, watchdog_poll_seconds=0.2)
    vast.fake.add_offer()
    try:
        for cmd in ("up", "sync"):
            r = vast.run(cmd, timeout=600)
            assert r.returncode == 0, (cmd, r.stdout[-2000:], r.stderr[-2000:])
        (inst,) = vast.fake.live_instances()
        info = json.loads(vast.run("status", "--json").stdout)["watchdog"]
        assert info["running"] and info["will_stop"]["rule"].startswith("cap reached"), info
        assert vast.fake._status(inst)[1] == "running"
        r = vast.run("start")
        assert r.returncode == 0, r.stdout + r.stderr
        deadline = time.monotonic() + 60
        while vast.fake._status(inst)[1] != "stopped" and time.monotonic() < deadline:
            time.sleep(0.3)
        log = (project.workspace / ".watchdog" / "watchdog.log").read_text()
        assert vast.fake._status(inst)[1] == "stopped", log
        assert "max_hours 0.0001 reached" in log
        stops = [q for q in vast.fake.requests_by("instance") if q["body"] == {"state": "stopped"}]
        assert stops and stops[0]["path"] == f"/api/v0/instances/{inst.id}/"
        assert not [q for q in vast.fake.requests_by("user") if q["body"] == {"state": "stopped"}]
    finally:
        vast.run("stop")
        vast.run("down", "--force")
