# EntGAN — every target does its own set-up (venv + pinned dependencies) on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
JOB    ?= jobs/demo.yaml
UI_PORT ?= 5000
# MLflow's usage telemetry stays off for every tool a target runs (mlflow ui too) unless you set it:
# `make ui MLFLOW_DISABLE_TELEMETRY=false` (docs/use-a-generator.md).
MLFLOW_DISABLE_TELEMETRY ?= true
export MLFLOW_DISABLE_TELEMETRY

.PHONY: install run test compile ui clean help lifelong browser figures bench bench-quick

# `make help` prints every target that has a `## what it does` comment on its rule line
# (tests/cli/test_make_help.py checks that every .PHONY target has one).
help:  ## list the targets (this)
	@grep -hE '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /\1\t/' \
		| awk -F'\t' '{ printf "make %-12s %s\n", $$1, $$2 }'
	@echo "variables: JOB=$(JOB) CLUSTER_JOB=$(CLUSTER_JOB) UI_PORT=$(UI_PORT) REGISTRY=$(REGISTRY) TAG=$(TAG) CRON='$(CRON)'"

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[test]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the pinned dependencies (every target does this first)

run: install  ## the demo job end to end: demo edge folders, then `entgan run JOB` (kfp.local + embedded MLflow)
	$(BIN)/entgan data demo --root .entgan/demo/edges
	$(BIN)/entgan run $(JOB)

test: install browser  ## the layer contract (lint-imports) and the test suite (pytest; installs chromium for the browser test when it can)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

# tests/library/test_mlflow_ui.py drives Debian's chromium + chromedriver: install them when missing and
# apt-get can (root, or password-less sudo); otherwise say so (the test then fails under CI=true).
browser:  ## install chromium + chromedriver with apt-get when missing (for tests/library/test_mlflow_ui.py)
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium and chromium-driver (apt-get) for the MLflow UI browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	elif command -v apt-get >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
		sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "chromium/chromedriver are missing and cannot be installed here: install chromium and chromium-driver"; fi

# The README's pictures: samples (real vs generated) and FID curves of the demo, into docs/figures/.
figures: install  ## redraw the README's figures into docs/figures/ from the demo's task library (after make run)
	$(BIN)/entgan figures $(JOB) --out docs/figures

# Benchmarks (README: Benchmarks; docs/benchmarks.md): `bench` writes benchmarks/results/; `bench-quick` runs the same
# harness on tiny settings into build/bench-quick (tests/benchmarks/test_bench_quick.py runs it in `make test`).
bench: install  ## every benchmark figure: benchmarks/results/latest.json + plots (figures 1-8 ~40 min on 2 idle cores; 9 over an hour)
	$(BIN)/python -m benchmarks

bench-quick: install  ## the benchmark harness on tiny settings, into build/bench-quick
	$(BIN)/python -m benchmarks --quick --out build/bench-quick

compile: install  ## compile JOB to build/<name>.pipeline.yaml for Kubeflow
	$(BIN)/entgan compile $(JOB) -o build/$(notdir $(basename $(JOB))).pipeline.yaml

ui: install  ## MLflow UI over the demo's task library (http://127.0.0.1:UI_PORT)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/.entgan/demo/mlflow.db \
		--host 127.0.0.1 --port $(UI_PORT)

clean:  ## remove local state and build output (.entgan, build)
	rm -rf .entgan build

# ---------------------------------------------------------------- Kubeflow (README: Deploy on Kubeflow; docs/kubeflow.md)
REGISTRY    ?= ghcr.io/entgan
TAG         ?= 0.1.0
DOCKER      ?= docker
CLUSTER_JOB ?= jobs/cluster.yaml
IMAGE       ?= $(REGISTRY)/entgan:$(TAG)-cuda
CRON        ?= 0 */6 * * *
MLFLOW_VERSION := $(shell sed -n 's/^mlflow==//p' requirements.lock)

.PHONY: images upload schedule

images:  ## build and push the component image (CPU: TAG, CUDA: TAG-cuda) and the MLflow server image
	$(DOCKER) build -f images/Dockerfile --build-arg VARIANT=cpu -t $(REGISTRY)/entgan:$(TAG) .
	$(DOCKER) build -f images/Dockerfile --build-arg VARIANT=cuda -t $(REGISTRY)/entgan:$(TAG)-cuda .
	$(DOCKER) build -f images/mlflow.Dockerfile -t $(REGISTRY)/mlflow:$(MLFLOW_VERSION) .
	$(DOCKER) push $(REGISTRY)/entgan:$(TAG)
	$(DOCKER) push $(REGISTRY)/entgan:$(TAG)-cuda
	$(DOCKER) push $(REGISTRY)/mlflow:$(MLFLOW_VERSION)

upload: install  ## compile CLUSTER_JOB with IMAGE and upload it to KFP_HOST (new pipeline or new version)
	$(BIN)/entgan upload $(CLUSTER_JOB) --image $(IMAGE)

schedule: install  ## create or update the recurring run of CLUSTER_JOB's pipeline (CRON, seconds optional)
	$(BIN)/entgan schedule $(CLUSTER_JOB) --cron '$(CRON)'

# The lifelong story: a first run, then new images and a new type arrive, then a second run.
lifelong: install  ## the lifelong story: a first run, new images and a new type arrive, a second run, status
	rm -rf .entgan/lifelong
	$(BIN)/entgan data demo --root .entgan/lifelong/edges --wave 1
	$(BIN)/entgan run jobs/lifelong.yaml
	$(BIN)/entgan data demo --root .entgan/lifelong/edges --wave 2
	$(BIN)/entgan run jobs/lifelong.yaml
	$(BIN)/entgan status jobs/lifelong.yaml
