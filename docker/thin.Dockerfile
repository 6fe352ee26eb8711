# The thin image: Vast.ai's TensorFlow image plus only what the trainer needs beyond it.
#
# Vast.ai hosts cache the layers of the vendor's popular images (vast-ai/base-image README,
# "Building a Derived Image": "Vast.ai hosts already have our base layers cached, so only
# your custom layers need to be downloaded"). TensorFlow with CUDA is gigabytes of those
# layers; ours are tens of megabytes: OpenCV headless, the few Python packages the base
# lacks, the trainer. A registry that already holds the base (Docker Hub mounts blobs
# across repositories) receives only these layers on `make push`. Build with
# `make image-thin` (docker/image_build.py build --variant thin).
#
# VAST_TF_IMAGE: a vendor TensorFlow tag that exists (deploy/providers/vast/image.py's
# VENDOR_TF_IMAGE, which says where the tag was seen; `make check` asks the registry). The
# vendor builds its tags from TENSORFLOW_VERSION over a CUDA base (derivatives/tensorflow/
# README.build.md:9-15): TensorFlow 2.19 with its own Keras and TensorBoard, which our
# requirements accept (pyproject.toml's tensorboard range) and this image never replaces.
# CI runs the trainer's tests on tensorflow-cpu 2.19.0 as well as on our own pin.
ARG VAST_TF_IMAGE=vastai/tensorflow:2.19.0-cuda-12.4.1
FROM ${VAST_TF_IMAGE}

SHELL ["/bin/sh", "-eux", "-c"]
# /venv/main first on PATH: `python3 -m trainer` and deploy's remote.python both find the
# environment that has TensorFlow, in `docker run` as in an SSH session.
ENV PATH=/venv/main/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    TF_CPP_MIN_LOG_LEVEL=1 \
    KERAS_HOME=/opt/keras
WORKDIR /workspace

# One layer for what the base lacks (few on purpose: a vfs storage driver copies the whole
# filesystem per layer, and the base is gigabytes):
# - system tools deploy/ relies on (rsync, ssh, sshd, pgrep), installed only when missing:
#   the vendor's base ships rsync and procps (vast-ai/base-image Dockerfile:122,165) but no
#   SSH server (in SSH launch mode the platform supplies one) and no tmux (nothing of ours
#   uses it); host keys of a package we install are not kept;
# - the trainer's requirements from pyproject.toml, installed into /venv/main under
#   constraints pinning every distribution the base has (docker/base_constraints.py):
#   TensorFlow, Keras, TensorBoard and their numpy are never replaced. The cost watchdog
#   needs nothing but the standard library.
# hadolint ignore=DL3008,SC2086
RUN --mount=type=bind,source=pyproject.toml,target=/tmp/build/pyproject.toml \
    --mount=type=bind,source=docker/requirements_from_pyproject.py,target=/tmp/build/requirements_from_pyproject.py \
    --mount=type=bind,source=docker/base_constraints.py,target=/tmp/build/base_constraints.py \
    --mount=type=bind,source=docker/with_extra_ca.sh,target=/tmp/build/with_extra_ca.sh \
    --mount=type=secret,id=extra_ca \
    missing=""; \
    for tool in rsync:rsync ssh:openssh-client sshd:openssh-server pgrep:procps; do \
        command -v "${tool%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${tool%%:*}" ] || missing="$missing ${tool#*:}"; \
    done; \
    if [ -n "$missing" ]; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing; \
        rm -f /etc/ssh/ssh_host_*; \
        echo 'ssh-keygen -A >/dev/null 2>&1 || true  # per-container host keys (violence-trainer image)' >> /etc/default/ssh; \
        mkdir -p /run/sshd; \
        apt-get clean; \
        rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log /var/cache/debconf/*-old; \
    fi; \
    /venv/main/bin/python /tmp/build/requirements_from_pyproject.py /tmp/build/pyproject.toml train > /tmp/requirements.txt; \
    /venv/main/bin/python /tmp/build/base_constraints.py > /tmp/constraints.txt; \
    sh /tmp/build/with_extra_ca.sh /venv/main/bin/python -m pip install --no-cache-dir -c /tmp/constraints.txt -r /tmp/requirements.txt; \
    rm -rf /tmp/requirements.txt /tmp/constraints.txt /root/.cache; \
    /venv/main/bin/python -c "import cv2, numpy, sklearn, tensorflow, yaml; print('tensorflow', tensorflow.__version__, 'opencv', cv2.__version__)"

RUN --mount=type=bind,target=/tmp/src,rw \
    --mount=type=secret,id=extra_ca \
    sh /tmp/src/docker/with_extra_ca.sh /venv/main/bin/python -m pip install --no-cache-dir --no-deps /tmp/src; \
    mkdir -p /opt/violence-trainer; \
    cp -r /tmp/src/configs /opt/violence-trainer/configs; \
    rm -rf /root/.cache; \
    python3 -m trainer --help > /dev/null

ARG VAST_TF_IMAGE
ARG VERSION=0.0.0
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="violence-trainer (thin)" \
      org.opencontainers.image.description="violence-trainer on Vast.ai's TensorFlow image: only the trainer's own layers on top" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.base.name="${VAST_TF_IMAGE}"
CMD ["python3", "-m", "trainer", "--help"]
