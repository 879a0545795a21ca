# One-word developer tasks. Everything runs from the project's virtualenv (.venv).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Extras installed into the venv; CI adds tf and mlflow (EXTRAS=dev,tf,mlflow).
EXTRAS ?= dev
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),_,$(EXTRAS))
PYTEST_ARGS ?=

.PHONY: help venv demo test test-fast lint format bench proto notebooks generate smoke env k8s-env clean

help:
	@echo "make demo     - create the venv if needed and run the end-to-end demo (PROFILE=NAME: another data set)"
	@echo "make test     - run the whole test suite (servers it needs must be installed)"
	@echo "make test-fast- skip tests marked slow"
	@echo "make lint     - ruff check + format check"
	@echo "make bench    - run the benchmarks in bench/ and print their figures"
	@echo "make proto    - regenerate the protocol descriptors from the .proto files"
	@echo "make notebooks- regenerate the notebooks in notebooks/ from their source"
	@echo "make generate - regenerate the Kapacitor task files, the Grafana dashboards and the Kubernetes copies"
	@echo "make env      - write .env with random credentials for the compose stack (UPDATE=1: add new ones)"
	@echo "make smoke    - query every compose service's health on 127.0.0.1"
	@echo "make k8s-env  - write deploy/kubernetes/base/stack.env (the Kubernetes Secret)"

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) tools/bootstrap_venv.py $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	rm -f $(VENV)/.installed-*
	touch $@

# make demo PROFILE=machine_failure: the same run for another data set (profiles/NAME.toml)
demo: venv
	$(BIN)/python -m demo $(if $(PROFILE),--profile $(PROFILE),) $(DEMO_ARGS)

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: venv
	$(BIN)/python -m bench $(BENCH_ARGS)

proto: venv
	$(BIN)/python -m udf_agent.protocol._generate
	$(BIN)/python -m models.backends.tfserving._generate

notebooks: venv
	$(BIN)/python notebooks/make_notebooks.py

generate: venv
	$(BIN)/python compose/scripts/gen_tasks.py
	$(BIN)/python compose/scripts/gen_dashboards.py
	$(BIN)/python deploy/kubernetes/sync_files.py

# FORCE=1 replaces the file; UPDATE=1 adds only the variables it lacks (after an upgrade)
env:
	$(PYTHON) compose/scripts/make_env.py $(if $(FORCE),--force,)$(if $(UPDATE),--add-missing,)

# the same variables as `make env`, for the Kubernetes Secret (docs/kubernetes.md)
k8s-env:
	$(PYTHON) compose/scripts/make_env.py --output deploy/kubernetes/base/stack.env --no-link $(if $(FORCE),--force,)$(if $(UPDATE),--add-missing,)

smoke:
	$(PYTHON) compose/scripts/smoke.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
