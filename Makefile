# Two entry points for newcomers: `make run` (train -> gates -> registry on Fashion-MNIST) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Project-local homes, Prefect's offline defaults and TF's log level are set by the code itself
# (tasks/settings.py runtime_defaults), so the console scripts behave the same outside make.

ARGS ?=
PYTEST_ARGS ?=
STACK ?=

.PHONY: install data run test test-fast test-python docs lint format mlflow-ui bench-serving bench-training bench-ood bench-gates bench-photos bench-container bench-reliability bench-shadow bench-swarm bench-estimate bench-capture docker-up docker-down swarm-up serve rollback tune up down status screenshots clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' \
	  || { echo "Python 3.11, 3.12 or 3.13 is needed; $(PYTHON) is $$($(PYTHON) --version 2>&1): make ... PYTHON=python3.12" >&2; exit 1; }
	@$(PYTHON) -m venv $(VENV) \
	  || { echo "$(PYTHON) cannot make a venv: on Debian or Ubuntu, sudo apt-get install python3-venv" >&2; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

# Fashion-MNIST where the pipeline looks for it (scripts/fashion-mnist.sh): the same for run and test.
data:
	scripts/fashion-mnist.sh

# The whole lifecycle: first the data (unless ARGS names other data) and the Docker engine the container
# stage needs (started where this user can; else one message and no training), unless ARGS turns it off.
# STACK=1: through the running stack (`make up`): its Prefect, MLflow and registry, with its credentials.
run: install
	$(if $(findstring --data.path,$(ARGS))$(findstring --data.source,$(ARGS)),,scripts/fashion-mnist.sh)
	$(if $(findstring container.no-enabled,$(ARGS)),,scripts/docker-engine.sh ensure)
	$(if $(STACK),eval "$$($(BIN)/clothes-stack env)" &&) $(BIN)/clothes-pipeline $(ARGS)

# Production containers running on this engine (e.g. what `make run` deployed): the one test that stops
# and restarts the engine must not stop them, so it is skipped by name (MLOPS_TEST_WITHOUT_ENGINE_RESTART).
PRODUCTION := $(shell docker ps -q --filter label=io.clothes-mlops.role=production 2>/dev/null)

# The whole suite, as CI runs it, with what it needs from the machine set up first (as root on Debian:
# chromium, PostgreSQL, docker-registry, the Docker engine; else one message). A test whose requirement is
# still missing fails saying what is missing (MLOPS_TEST_WITHOUT_<NAME>=1 skips it by name: tests/conftest.py).
test: install data
	scripts/test-requirements.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(if $(PRODUCTION),@echo "production is serving on this engine: the engine-restart test is skipped (MLOPS_TEST_WITHOUT_ENGINE_RESTART=1)")
	$(if $(PRODUCTION),MLOPS_TEST_WITHOUT_ENGINE_RESTART=1) $(BIN)/python -m pytest $(PYTEST_ARGS)

# The quick loop while changing code: no training of whole pipelines, no containers, no fault injection.
test-fast: install data
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not slow and not docker and not reliability" $(PYTEST_ARGS)

# The fast suite on another Python in a venv of its own, e.g. `make test-python PYTHON=python3.13`.
test-python:
	$(MAKE) test-fast VENV=.venv-$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# The docs site (MkDocs + Material) into site/, offline and --strict: a broken link or an unlisted page
# fails. First the configuration page, regenerated from the code's Field descriptions.
docs: install
	$(BIN)/python -m ops.config_reference > docs/configuration.md
	$(BIN)/python -m ops.cli_reference > docs/cli.md
	$(BIN)/python -m ops.api_reference > docs/api/openapi.json
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

lint: install
	$(BIN)/ruff check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The MLflow UI alone, in the foreground, on the store `make run` writes (as `make up` starts it).
mlflow-ui: install
	$(BIN)/clothes-stack mlflow-ui

# The stack users run: Prefect server + worker + deployments of prefect.yaml + MLflow UI, on 127.0.0.1;
# MLOPS_STACK_HOST=<LAN address>: with credentials and an image registry (docs/several-machines.md).
up: install
	$(BIN)/clothes-stack up

down:
	$(BIN)/clothes-stack down

# PNGs of the MLflow experiment and registry pages and the newest train-and-deploy run (needs `make up`,
# one flow run, and Debian's chromium) into docs/screenshots/.
screenshots: install
	$(BIN)/clothes-stack screenshots

status:
	$(BIN)/clothes-stack status

# Serve what `make run` exported (models/<name>/<version>/) on 127.0.0.1:8080, or the next free port
# when production holds 8080 (it says so).
serve: install
	MLOPS_SERVE_HOST=127.0.0.1 $(BIN)/clothes-serve --model-root models

# Needs wrk (apt-get install wrk); bounded: a few 10 s runs against 127.0.0.1.
bench-serving: install
	$(BIN)/python benchmarks/bench_serving.py

bench-training: install
	$(BIN)/python benchmarks/bench_training.py

bench-ood: install
	$(BIN)/python benchmarks/bench_ood.py

# The default recipe with other seeds against a champion of the same recipe (statistical gates), and
# clearly worse candidates; trains 7 models on the full data.
bench-gates: install
	$(BIN)/python benchmarks/bench_gates.py

# Hostile clients and faults against the real server on 127.0.0.1 (bounded; the full-disk probe mounts a tmpfs: root).
bench-reliability: install
	$(BIN)/python benchmarks/bench_reliability.py

# The label-free accuracy estimate against the truth on 38 shifts, beside NannyML's CBPE in its own venv.
NANNYML_PYTHON ?= /usr/bin/python3
.venv-nannyml/.installed: benchmarks/nannyml-lock.txt
	$(NANNYML_PYTHON) -m venv .venv-nannyml
	.venv-nannyml/bin/python -m pip install --quiet -r benchmarks/nannyml-lock.txt
	touch $@

bench-estimate: install .venv-nannyml/.installed
	$(BIN)/python benchmarks/bench_estimate.py --nannyml .venv-nannyml/bin/python $(ARGS)

bench-shadow: install
	$(BIN)/python benchmarks/bench_shadow.py

# Capture to the object store: throughput beside the log alone, upload rate, the monitor's hour (needs wrk).
bench-capture: install
	$(BIN)/python benchmarks/bench_capture.py $(ARGS)

# Real-photo accuracy of the server on 127.0.0.1:8080 (`make run` deploys one): dataset PNGs vs photo-style files.
bench-photos: install
	$(BIN)/python benchmarks/bench_photos.py $(ARGS)

# Needs a swarm manager (`make swarm-up`) and wrk: 1 vs 2 replicas, failures during a rollout and a kill.
bench-swarm: install
	$(BIN)/python benchmarks/bench_swarm.py

# Needs a Docker engine: `make docker-up`.
bench-container: install
	$(BIN)/python benchmarks/bench_container.py

# Docker engine + local python:3.11-slim stand-in for machines without a registry (root, Debian).
docker-up:
	scripts/docker-engine.sh up

docker-down:
	scripts/docker-engine.sh down

# The engine as a single-node swarm manager, for MLOPS_DEPLOY_TARGET=swarm (replicated serving).
swarm-up:
	scripts/docker-engine.sh swarm

# Put the previous champion back into production.
rollback: install
	$(BIN)/clothes-rollback

tune: install
	$(BIN)/clothes-tune $(ARGS)

clean:
	rm -rf $(VENV) .venv-* .prefect .keras .cache .pytest_cache .ruff_cache site
