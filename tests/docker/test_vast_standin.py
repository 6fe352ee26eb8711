"""The local stand-in for vastai/tensorflow (docker/vast-tf-standin.Dockerfile) has the vendor's shape,
and `remote.python: overlay` trains on it without touching it.

The shape, each fact from vast-ai/base-image (cited in the Dockerfile): TensorFlow 2.19.0 in /venv/main
with the Keras and TensorBoard pip gives it, the base's extras there (huggingface-hub, ipykernel,
ipywidgets), rsync, no tmux, no SSH server, a `vastai` command but no Python that can import vastai.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "docker"))
import image_build  # noqa: E402

from tests.docker.test_dockerfile import engine  # noqa: E402,F401,F811  (the fixture, by name)

# name (normalised as PEP 503 does: tensorflow_cpu -> tensorflow-cpu) -> version, for what /venv/main holds
DISTS = ("import importlib.metadata as md, json, re; print(json.dumps({re.sub(r'[-_.]+', '-', d.metadata['Name']).lower(): "
         "d.version for d in md.distributions()}))")


@pytest.fixture(scope="module")
def standin(engine):  # noqa: F811

    return image_build.build_standin(progress="plain")


def _run(engine, image, cmd, **kw) -> str:
    return engine.containers.run(image, cmd, remove=True, **kw).decode()


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_the_stand_in_has_the_vendors_shape(engine, standin):  # noqa: F811
    dists = json.loads(_run(engine, standin, ["/venv/main/bin/python", "-c", DISTS], network_mode="none"))
    assert dists["tensorflow-cpu"] == "2.19.0"
    assert dists["tensorboard"].startswith("2.19.")  # tensorflow 2.19.0 requires tensorboard~=2.19.0
    assert dists["keras"].split(".")[0] == "3"
    assert {"wheel", "huggingface-hub", "ipykernel", "ipywidgets"} <= set(dists)
    probe = ("for p in /venv/main/bin/python /usr/bin/python3; do $p -c 'import vastai' 2>/dev/null && echo \"$p imports vastai\"; "
             "done; command -v tmux && echo tmux; command -v sshd /usr/sbin/sshd && echo sshd; "
             "command -v rsync >/dev/null && command -v vastai >/dev/null && echo shape-ok")
    assert _run(engine, standin, ["sh", "-c", probe], network_mode="none").strip() == "shape-ok"


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_overlay_trains_on_the_stand_in_and_leaves_its_base_untouched(engine, standin, tmp_path):  # noqa: F811
    """deploy/host/overlay.py's script, as `sync` runs it on a host, inside the stand-in: the overlay venv
    adds what the trainer lacks (OpenCV, ...) from PyPI, never a second TensorFlow, Keras or TensorBoard;
    then the trainer runs in it on a synthetic dataset for one epoch."""
    from deploy.host import overlay
    from deploy.host.layout import Layout

    config = {"remote": {"python": "overlay", "workspace": "/workspace"}}
    script = overlay.overlay_script(Layout("/workspace"), config, overlay.requirements())
    (tmp_path / "overlay.sh").write_text(script)
    train = ("set -e; export PYTHONPATH=/src; py=/workspace/venv/bin/python; "
             "$py -m trainer synth --out /workspace/dataset --videos 16 --seed 0; "
             "$py -m trainer extract --dataset-path /workspace/dataset --cache-dir /workspace/cache "
             "--config /src/configs/demo.yaml --quiet; "
             "$py -m trainer train --cache-dir /workspace/cache --output-dir /workspace/out --config "
             "/src/configs/demo.yaml --epochs 1 --no-evaluate; test -s /workspace/out/best_model.keras && echo TRAINED")
    before = _run(engine, standin, ["/venv/main/bin/python", "-c", DISTS], network_mode="none")
    net = "host" if not any(n.name == "bridge" for n in engine.networks.list()) else "bridge"
    ca = next((p for p in [os.environ.get("SSL_CERT_FILE", ""), *image_build.HOST_CA_BUNDLES] if p and os.path.isfile(p)),
              None)
    env = {"TF_CPP_MIN_LOG_LEVEL": "2"}
    volumes = {str(REPO): {"bind": "/src", "mode": "ro"}, str(tmp_path): {"bind": "/job", "mode": "rw"}}
    if ca:  # a proxy's CA, as the image builds use it (docker/with_extra_ca.sh)
        volumes[ca] = {"bind": "/etc/extra-ca.pem", "mode": "ro"}
        env.update(PIP_CERT="/etc/extra-ca.pem")
    container = engine.containers.run(
        standin, ["sh", "-c", "sh /job/overlay.sh > /job/overlay.log 2>&1 && echo OVERLAID && "
                              "/venv/main/bin/python -c \"$DISTS\" > /job/after.json && " + train],
        environment={**env, "DISTS": DISTS}, volumes=volumes, network_mode=net, detach=True)
    try:
        result = container.wait(timeout=2000)
        logs = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    assert result["StatusCode"] == 0, logs[-3000:] + (tmp_path / "overlay.log").read_text()[-3000:]
    assert "OVERLAID" in logs and "TRAINED" in logs
    overlay_log = (tmp_path / "overlay.log").read_text()
    assert "building the overlay venv" in overlay_log and "TensorFlow 2.19.0" in overlay_log
    assert json.loads((tmp_path / "after.json").read_text()) == json.loads(before)  # /venv/main untouched
    added = [ln for ln in overlay_log.splitlines() if ln.startswith("Successfully installed")]
    assert added and not any(w.lower().startswith(("tensorflow", "keras-", "tensorboard-", "numpy-"))
                             for w in added[-1].split()[2:]), added
