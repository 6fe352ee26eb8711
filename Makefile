# Every target that needs Python installs it first (.venv/ via `make setup`).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
EXTRAS ?= train,cpu,deploy,dev
CONFIG ?= configs/deploy.yaml
DEPLOY := $(PY) -m deploy --config $(CONFIG)

.PHONY: setup test test-fast demo bench check deploy logs fetch status stop ssh destroy run tensorboard watch \
        image image-cpu image-thin push local-run docker-smoke docker-smoke-thin clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || { \
	  echo "python3-venv is missing; installing it (needs root/sudo)"; \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -qq && \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	@touch $@

## tests -----------------------------------------------------------------------------
# Three pytest workers on any machine: most of the suite waits on sshd, rsync, sleeps and
# subprocesses (serially 2 cores sat 40 % idle); --dist loadfile keeps each file on one
# worker, so the image builds of tests/docker run one after another.
PYTEST_PAR := -n 3 --dist loadfile

test: setup          ## the whole suite, as CI runs it
	$(PY) -m pytest -q $(PYTEST_PAR) --durations=20

test-fast: setup     ## everything but the slow end-to-end tests (a few minutes)
	$(PY) -m pytest -q $(PYTEST_PAR) -m "not slow"

## the main job on a built-in synthetic dataset, on a laptop CPU -----------------------
demo: setup
	$(PY) -m trainer synth --out demo/dataset --videos 1200 --seed 0
	$(PY) -m trainer extract --dataset-path demo/dataset --cache-dir demo/cache --config configs/demo.yaml
	$(PY) -m trainer info --cache-dir demo/cache
	rm -rf demo/run
	$(PY) -m trainer train --cache-dir demo/cache --output-dir demo/run --config configs/demo.yaml --no-evaluate
	$(PY) -m trainer evaluate --cache-dir demo/cache --model demo/run/best_model.keras
	@$(PY) -c "import json; m = json.load(open('demo/run/metrics.json')); \
	  print(f\"demo test accuracy: {m['accuracy']:.1%} on {m['samples']} videos (thumbnail backbone, CPU), expected calibration error {m['expected_calibration_error']:.3f}\")"

bench: setup
	$(PY) bench/frame_sampling.py
	$(PY) bench/train_throughput.py
	$(PY) bench/deploy_sync.py
	$(PY) bench/plan_inputs.py
	$(PY) bench/predict_batching.py

## deploy: a rented Vast.ai instance or your own SSH host (configs/deploy.yaml) --------
check: setup         ## read-only preflight against the provider: rents nothing, costs nothing
	$(DEPLOY) check

deploy: setup        ## up + sync + start
	$(DEPLOY) up && $(DEPLOY) sync && $(DEPLOY) start

run: setup           ## up + sync + start + logs --follow + fetch
	$(DEPLOY) run

logs: setup
	$(DEPLOY) logs --follow

fetch: setup
	$(DEPLOY) fetch

status: setup
	$(DEPLOY) status

stop: setup         ## SIGTERM the run on the host (it checkpoints, exits 143); destroys nothing
	$(DEPLOY) stop

ssh: setup
	$(DEPLOY) ssh

tensorboard: setup   ## TensorBoard of the current run, at the URL it prints (PORT=N for a fixed local port)
	$(DEPLOY) tensorboard $(if $(PORT),--port $(PORT))

watch: setup         ## live view of the run: epoch, ETA, metrics, GPUs, disk, $ spent (Ctrl-C stops viewing)
	$(DEPLOY) watch

destroy: setup
	$(DEPLOY) down

clean:
	rm -rf demo .pytest_cache

## docker: the image is the environment (docker/, docs/images.md) -------------
IMAGE_GPU ?= violence-trainer:gpu
IMAGE_CPU ?= violence-trainer:cpu
IMAGE_THIN ?= violence-trainer:thin

image: setup         ## GPU image; BASE_IMAGE=..., BAKE_WEIGHTS=1, EXTRA_CA=pem
	$(PY) docker/image_build.py build --variant gpu --tag '$(IMAGE_GPU)' $(if $(filter 1,$(BAKE_WEIGHTS)),--bake-weights)

image-thin: setup    ## thin image on Vast's TensorFlow image (VAST_TF_IMAGE=...; `make image-thin VAST_TF_IMAGE=$$(.venv/bin/python docker/image_build.py standin)` without Docker Hub)
	$(PY) docker/image_build.py build --variant thin --tag '$(IMAGE_THIN)' $(if $(VAST_TF_IMAGE),--base-image '$(VAST_TF_IMAGE)')

image-cpu: setup     ## CPU image (tensorflow-cpu), same Dockerfile
	$(PY) docker/image_build.py build --variant cpu --tag '$(IMAGE_CPU)' $(if $(filter 1,$(BAKE_WEIGHTS)),--bake-weights)

push: setup          ## make push IMAGE=registry/name:tag [SOURCE=violence-trainer:thin]  (default: the GPU image)
	@test -n '$(IMAGE)' || { echo "usage: make push IMAGE=registry/name:tag (after make image and docker login)" >&2; exit 2; }
	$(PY) docker/image_build.py push '$(IMAGE)' --source '$(or $(SOURCE),$(IMAGE_GPU))'

local-run: setup     ## make local-run DATASET=path [TRAIN_CONFIG=f] [ARGS='--epochs 5']
	@test -n '$(DATASET)' || { echo "usage: make local-run DATASET=path/to/videos [TRAIN_CONFIG=configs/train.yaml] [ARGS='--epochs 5']" >&2; exit 2; }
	$(PY) docker/local_run.py --dataset '$(DATASET)' $(if $(TRAIN_CONFIG),--config '$(TRAIN_CONFIG)') $(if $(ARGS),-- $(ARGS))

docker-smoke: setup  ## build the CPU image, run synth/extract/train/evaluate in it, check the outputs
	$(PY) docker/smoke.py

docker-smoke-thin: setup  ## the same with the thin image on a local stand-in for Vast's TensorFlow image
	$(PY) docker/smoke.py --variant thin
