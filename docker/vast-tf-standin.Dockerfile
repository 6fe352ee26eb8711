# A local stand-in for Vast.ai's TensorFlow image (vastai/tensorflow), to build and test
# docker/thin.Dockerfile where Docker Hub cannot be reached. What the thin image relies
# on is reproduced, nothing more: TensorFlow installed in an environment at /venv/main
# (vast-ai/base-image, derivatives/tensorflow/Dockerfile: `. /venv/main/bin/activate &&
# pip install tensorflow[and-cuda]==${TENSORFLOW_VERSION}`), with pip in it. The vendor's
# /venv/main is a conda env and its base Ubuntu 22.04 with CUDA; this one is a venv on our
# Debian base with the CPU build of TensorFlow. Built by `docker/image_build.py standin`.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
SHELL ["/bin/sh", "-eux", "-c"]
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
ARG TENSORFLOW="tensorflow-cpu==2.21.0"
# The Debian base has no python3-venv (ensurepip): the venv is made without pip, and the
# system pip installs pip and TensorFlow into it.
RUN --mount=type=bind,source=docker/with_extra_ca.sh,target=/tmp/build/with_extra_ca.sh \
    --mount=type=secret,id=extra_ca \
    python3 -m venv --without-pip /venv/main; \
    sh /tmp/build/with_extra_ca.sh python3 -m pip --python /venv/main/bin/python install --no-cache-dir pip "${TENSORFLOW}"; \
    rm -rf /root/.cache "$(/venv/main/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/tensorflow/include"; \
    /venv/main/bin/python -c "import tensorflow as tf; print('stand-in /venv/main: tensorflow', tf.__version__)"
LABEL io.violence-trainer.stand-in-for="vastai/tensorflow" io.violence-trainer.tensorflow="${TENSORFLOW}"
