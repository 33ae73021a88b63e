# mlobs: the single entry point.  CI runs `make test` (see .ci/run).
#
# Every upstream version is pinned once: Python packages in constraints.txt, the rest in
# versions.env or the file it names (tests/test_pins.py checks it).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-test
BENCH_STAMP := $(VENV)/.installed-bench
MUTATION_STAMP := $(VENV)/.installed-mutation
# The Node packages the tests check against (libflux, Grafana's dashboard types, TypeScript),
# pinned by tests/js/package-lock.json; installed again whenever it changes.
JS_DIR   := tests/js
JS_STAMP := $(JS_DIR)/node_modules/.installed

.PHONY: help all venv tools js fmt generate lint pytest rules-test test validate bench mutation up preflight down demo e2e clean

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

all: lint test ## lint and test

$(STAMP): pyproject.toml constraints.txt
	@echo "==> creating $(VENV) and installing mlobs with its test extras"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	@touch $@

venv: $(STAMP) ## create .venv with the project and its test tools

tools: ## install promtool, Prometheus, Alertmanager and amtool if missing
	@scripts/ensure-prometheus.sh

$(JS_STAMP): $(JS_DIR)/package.json $(JS_DIR)/package-lock.json
	@echo "==> npm ci in $(JS_DIR) (libflux, Grafana's dashboard types, TypeScript)"
	cd $(JS_DIR) && npm ci --no-audit --no-fund
	@touch $@

js: $(JS_STAMP) ## install the Node packages the tests check Flux and dashboards with

# The Kubeflow and Airflow examples of docs/instrument.md are checked in venvs of their own,
# $(VENV)/instrument-kfp and $(VENV)/instrument-airflow: their kubernetes ranges exclude the
# exporter's.  Each is pinned by examples/instrument/constraints-<name>.txt, and rebuilt when it
# changes (tests/test_instrument.py holds it to the extra instrument-<name> of pyproject.toml).
INSTRUMENT_STAMPS := $(VENV)/instrument-kfp/.installed $(VENV)/instrument-airflow/.installed

$(VENV)/instrument-%/.installed: examples/instrument/constraints-%.txt
	@echo "==> creating $(VENV)/instrument-$* (the $* example of docs/instrument.md)"
	$(PYTHON) -m venv $(VENV)/instrument-$*
	$(VENV)/instrument-$*/bin/pip install --quiet --disable-pip-version-check \
	  -c examples/instrument/constraints-$*.txt -e '.[instrument-$*]'
	@touch $@

fmt: venv ## format the Python code
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

generate: venv ## write every generated file: dashboards, fluent.conf's routes, the chart's copies and values tables
	$(PY) -m dashboards.generate
	$(PY) -m fluentd.generate
	$(PY) scripts/chart_files.py
	$(PY) scripts/values_readme.py

lint: venv ## ruff, mypy, shellcheck and hadolint
	@echo "==> ruff"
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@echo "==> mypy"
	$(VENV)/bin/mypy
	@echo "==> shellcheck"
	$(VENV)/bin/shellcheck scripts/*.sh .ci/run
	@echo "==> hadolint"
	$(VENV)/bin/hadolint $$(git ls-files '*Dockerfile')

pytest: venv tools $(JS_STAMP) $(INSTRUMENT_STAMPS) ## the Python test suite
	@echo "==> pytest"
	$(VENV)/bin/pytest

rules-test: tools ## promtool check + unit tests of alerting/, amtool check-config
	@echo "==> promtool check rules"
	promtool check rules $$(ls alerting/*-rules.yaml)
	@echo "==> promtool test rules"
	cd alerting && promtool test rules $$(ls *-rules-test.yaml)
	@echo "==> amtool check-config"
	amtool check-config alerting/alertmanager.yaml

test: lint pytest rules-test ## everything CI runs: lint, pytest, promtool tests

validate: rules-test ## static checks of generated and deployable files

$(BENCH_STAMP): $(STAMP)
	@echo "==> installing the benchmark extras (MLflow, for the side-by-side figures)"
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,bench]'
	@touch $@

bench: $(BENCH_STAMP) ## benchmarks side by side with the peers; prints tables
	$(PY) -m bench

$(MUTATION_STAMP): $(STAMP)
	@echo "==> installing the mutation-testing extra (cosmic-ray)"
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,mutation]'
	@touch $@

MUTANTS ?= 60
mutation: $(MUTATION_STAMP) tools ## mutation score of the modules whose tests must pin values (MUTANTS=0: all)
	$(PY) scripts/mutation.py --sample $(MUTANTS)

# Minimum versions of the cluster tools `make up` checks (KIND_MIN, HELM_MIN): in
# versions.env, with every other upstream version that has no file of its own (it says where
# the rest are pinned).
include versions.env

up: ## the stack on kind, ready to use: preflight, cluster, images, chart, then waits (idempotent)
	KIND_MIN=$(KIND_MIN) HELM_MIN=$(HELM_MIN) scripts/up.sh

preflight: ## what make up checks first: tools, Docker's memory, host ports (creates nothing)
	KIND_MIN=$(KIND_MIN) HELM_MIN=$(HELM_MIN) scripts/up.sh --preflight

down: ## delete the kind cluster
	scripts/down.sh

demo: ## run the demo pipelines (success, failure, OOM kill), shifted model-API traffic and a drift monitor run
	@scripts/require-cluster.sh
	scripts/demo.sh

# make e2e needs mlobs and what it needs at run time (the read API's InfluxDB client), not the
# test tools: a stamp of its own, which make venv later completes with the test extras.
RUNTIME_STAMP := $(VENV)/.installed-runtime
E2E_EXTRAS    := influxdb

$(RUNTIME_STAMP): pyproject.toml constraints.txt
	@echo "==> creating $(VENV) with mlobs and its runtime dependencies ($(E2E_EXTRAS))"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[$(E2E_EXTRAS)]'
	@touch $@

e2e: ## assertions against the live cluster (after make up and make demo)
	@scripts/require-cluster.sh
	@$(MAKE) --no-print-directory $(RUNTIME_STAMP)
	scripts/cluster-env.sh $(PY) scripts/e2e.py

clean: ## remove the venv, caches and tests/js/node_modules
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .bench *.egg-info $(JS_DIR)/node_modules
