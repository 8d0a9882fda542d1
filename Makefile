# Two commands do everything on a fresh machine (see README):
#   make demo   the main job: the local promotion demo (scripts/demo.py)
#   make test   lint, type-check and run the test suite
# Both install what they need first (virtualenv, pinned Python packages, pinned kubectl/helm,
# Debian packages when running as root) and skip what is already in place.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TOOLS := .tools
STAMP := $(VENV)/.installed
CLI_STAMP := $(VENV)/.installed-cli
PYTEST_ARGS ?=

.PHONY: demo test bench lint typecheck setup cli system tools render validate clean

demo: setup
	$(BIN)/python scripts/demo.py

setup: system $(STAMP) tools

system:
	@scripts/setup-system.sh

$(STAMP): pyproject.toml requirements/constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed, found " + sys.version)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		-c requirements/constraints.txt -e '.[dev]'
	@touch $@

# Only mlopsctl and its pinned tools, for the workflows that run it (no test dependencies).
cli: $(CLI_STAMP)
	$(BIN)/mlopsctl tools install

$(CLI_STAMP): pyproject.toml requirements/constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed, found " + sys.version)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		-c requirements/constraints.txt -e .
	@touch $@

tools: $(TOOLS)/bin/kubectl

$(TOOLS)/bin/kubectl: $(STAMP)
	$(BIN)/mlopsctl tools install
	@touch $@

render: setup
	$(BIN)/mlopsctl render --out build/rendered

validate: setup
	$(BIN)/mlopsctl validate

lint: $(STAMP)
	$(BIN)/ruff check scripts tests
	$(BIN)/ruff format --check scripts tests

typecheck: $(STAMP)
	$(BIN)/mypy

# The tests that run the platform on this machine (network namespaces, cgroups, the demo) run
# first, on their own, as the platform would run on a quiet node; the rest then run on two
# workers (most of them wait on MLflow, git and kustomize processes).
PLATFORM_TESTS := tests/localrun tests/test_demo.py
PYTEST_WORKERS ?= 2

test: setup lint typecheck
	$(BIN)/pytest $(PLATFORM_TESTS) $(PYTEST_ARGS)
	$(BIN)/pytest -n $(PYTEST_WORKERS) $(addprefix --ignore=,$(PLATFORM_TESTS)) $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m tests.benchmarks
	$(BIN)/python -m tests.benchmarks.registry

clean:
	rm -rf $(VENV) $(TOOLS) build .pytest_cache .mypy_cache .ruff_cache
