# A local stand-in for Vast.ai's TensorFlow image (vastai/tensorflow:2.19.0-cuda-12.4.1), to build
# docker/thin.Dockerfile and run the overlay where Docker Hub cannot be reached. Built by
# `docker/image_build.py standin`. Every step below copies a line of the vendor's own files,
# repository vast-ai/base-image at commit a7552d1 (2026-08-21), cited as FILE:LINE:
#   Dockerfile                            the base image (vastai/base-image), which TensorFlow builds FROM
#   derivatives/tensorflow/Dockerfile     TensorFlow on top of it
#   derivatives/tensorflow/README.build.md  TENSORFLOW_VERSION and the cuda-12.4.1 base it is built on
#   ROOT/opt/instance-tools/bin/vastai    the `vastai` command
#
# What is NOT like the vendor's image, and why (none of it is something our code reads):
# - Base OS and Python: the vendor's is nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04
#   (README.build.md:12) with /venv/main a miniforge *conda* environment of Python 3.10
#   (Dockerfile:331 PYTHON_VERSION=3.10, :336-355 conda create -p /venv/main python=3.10).
#   Neither Ubuntu nor conda-forge can be reached here (only Debian, PyPI and npm): this is our
#   Debian 12 base (docker/build_base.sh) and /venv/main is a PEP 405 venv over Debian's
#   Python 3.11. The difference that matters to deploy/host/overlay.py: a conda env is a prefix
#   install (sys.prefix == sys.base_prefix, its own lib/python3.10/site-packages) where this is
#   a venv (pyvenv.cfg); overlay.py reads the base's site-packages folders from the interpreter
#   itself (site.getsitepackages + sysconfig), which covers both. The Python minor version
#   differs (3.11 here, 3.10 there): tests/docker/test_vendor_python.py checks that trainer/ and the
#   files run on the host parse as Python 3.10 and use no 3.11-only module.
# - TensorFlow's CPU build (tensorflow-cpu, same version): there is no GPU here; the vendor installs
#   tensorflow[and-cuda] (derivatives/tensorflow/Dockerfile:22-23), whose CUDA wheels only add the
#   nvidia-* libraries. Its Keras and TensorBoard are what pip resolves for that TensorFlow, as there.
# - Left out: CUDA, the desktop/dev apt packages, Caddy, the instance portal, syncthing, supervisor,
#   jupyter, uv, nvm, and the system-Python tools (Dockerfile:289-293: jupyter, supervisor,
#   tensorboard, magic-wormhole, installed into /usr/bin/python3, not /venv/main). Nothing of ours
#   uses them; /usr/bin/python3 here is Debian's bare one, which is what the watchdog needs.
# - /opt/vast-cli (Dockerfile:283, a git clone of github.com/vast-ai/vast-cli) cannot be fetched:
#   the wrapper that runs it is installed, the clone is not. Either way no Python can `import vastai`.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
SHELL ["/bin/sh", "-eux", "-c"]

# Dockerfile:34, :37-38, :41, :46: the base's environment.
ENV IMAGE_TYPE=vast DATA_DIRECTORY=/workspace WORKSPACE=/workspace PIP_BREAK_SYSTEM_PACKAGES=1 PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
# derivatives/tensorflow/Dockerfile:14 (TENSORFLOW_VERSION); the tag vastai/tensorflow:2.19.0-cuda-12.4.1.
ARG TENSORFLOW_VERSION=2.19.0

# Dockerfile:87-184, the packages deploy/ relies on from that list: rsync (:165), procps (:122),
# python3-full's venv (:153), curl (:96), ca-certificates (:91). tmux and openssh-server are not in
# the list (in SSH launch mode the platform supplies sshd and runs onstart instead of the entrypoint).
# Dockerfile:212-222: the `user` account (uid 1001, group root) and /opt/workspace-internal/.
# ROOT/opt/instance-tools/bin/vastai:1-5 and Dockerfile:426 (PATH): the `vastai` command.
# hadolint ignore=DL3008
RUN apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rsync procps python3-venv curl ca-certificates; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log /var/cache/debconf/*-old; \
    useradd -ms /bin/bash user -u 1001 -g 0; \
    mkdir -p /opt/workspace-internal/ /opt/instance-tools/bin /workspace; \
    printf '#!/bin/bash\n\ncd /opt/vast-cli\n\n/usr/bin/python3 vast.py "$@"\n' > /opt/instance-tools/bin/vastai; \
    chmod +x /opt/instance-tools/bin/vastai
ENV PATH=/opt/instance-tools/bin:${PATH}

# Dockerfile:355 (/venv/main, conda's Python: a venv here, see above), then :401-408 (uv pip install
# into /venv/main: wheel, huggingface-hub[cli], ipykernel, ipywidgets), then
# derivatives/tensorflow/Dockerfile:20-23 (`. /venv/main/bin/activate && pip install --no-cache-dir
# tensorflow[and-cuda]==${TENSORFLOW_VERSION}`: the CPU build here) and its own checks :25 (the version)
# and :35 (a Keras model compiles). TensorFlow's C++ headers are dropped to keep the vfs layer small.
RUN --mount=type=bind,source=docker/with_extra_ca.sh,target=/tmp/build/with_extra_ca.sh \
    --mount=type=secret,id=extra_ca \
    python3 -m venv /venv/main; \
    sh /tmp/build/with_extra_ca.sh /venv/main/bin/python -m pip install --no-cache-dir --upgrade pip; \
    sh /tmp/build/with_extra_ca.sh /venv/main/bin/python -m pip install --no-cache-dir \
        wheel "huggingface-hub[cli]" ipykernel ipywidgets; \
    sh /tmp/build/with_extra_ca.sh /venv/main/bin/python -m pip install --no-cache-dir "tensorflow-cpu==${TENSORFLOW_VERSION}"; \
    rm -rf /root/.cache "$(/venv/main/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/tensorflow/include"; \
    /venv/main/bin/python -c "import tensorflow as tf; assert tf.__version__.startswith('${TENSORFLOW_VERSION}'), tf.__version__"; \
    /venv/main/bin/python -c "import tensorflow as tf; model = tf.keras.Sequential([tf.keras.Input((10,)), tf.keras.layers.Dense(2)]); model.compile(optimizer='adam', loss='mse'); print('stand-in /venv/main: tensorflow', tf.__version__)"

WORKDIR /workspace
LABEL io.violence-trainer.stand-in-for="vastai/tensorflow:${TENSORFLOW_VERSION}-cuda-12.4.1" \
      io.violence-trainer.tensorflow="tensorflow-cpu==${TENSORFLOW_VERSION}" \
      io.violence-trainer.vendor-source="vast-ai/base-image@a7552d1"
