# Two commands do everything: `make` (install what is missing, then reproduce the default
# tables) and `make test` (install what is missing, then run the test suite).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
WHEELS := .cache/wheels
# Rules call `taskbal` and `snakemake` from the project's environment.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: all reproduce install test dry-run lint benchmark mlflow-ui mlflow-server

all: reproduce

reproduce: install
	snakemake

install: $(STAMP)

# Re-runs only when the pins, the package metadata or the wheel recipe change.
$(STAMP): requirements.txt pyproject.toml tools/build_learn2learn_wheel.sh
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (torch 2.14.1 and the learn2learn wheel are built for it); set PYTHON=python3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	tools/build_learn2learn_wheel.sh $(PY) $(WHEELS)
	$(PY) -m pip install --no-deps $(WHEELS)/learn2learn-0.2.0-*.whl
	$(PY) -m pip install --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	touch $(STAMP)

test: install
	$(PY) -m pytest

dry-run: install
	snakemake -n

# ruff (rules and line length in pyproject.toml), snakefmt on the rules, Snakemake's own linter.
lint: install
	$(VENV)/bin/ruff check src tests benchmarks tools
	$(VENV)/bin/snakefmt --line-length 120 --check Snakefile workflow/rules
	snakemake --lint

benchmark: install
	$(PY) benchmarks/bench_maml.py
	$(PY) benchmarks/bench_weighting.py
	$(PY) benchmarks/bench_tow.py
	$(PY) benchmarks/bench_dag.py

mlflow-ui: install
	@echo "runs table: http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning"
	mlflow ui --backend-store-uri sqlite:///$(CURDIR)/results/mlflow/mlflow.db --host 127.0.0.1 --port 5000

# A tracking server for many writers: MLFLOW_DB a database URI (PostgreSQL), MLFLOW_ARTIFACTS a folder.
MLFLOW_DB ?= postgresql+psycopg2://$(USER)@127.0.0.1:5432/mlflow
MLFLOW_ARTIFACTS ?= $(CURDIR)/results/mlflow/server-artifacts
mlflow-server: install
	tools/mlflow_server.sh $(MLFLOW_DB) $(MLFLOW_ARTIFACTS) 127.0.0.1 5000
