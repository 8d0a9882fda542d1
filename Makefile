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
	$(BIN)/mlopsctl tools install --no-test-servers

$(CLI_STAMP): pyproject.toml requirements/constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed, found " + sys.version)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		-c requirements/constraints.txt -e .
	@touch $@

# Every time: it checks each tool's version (a second or two) and builds or copies only what is
# missing or at another version.
tools: $(STAMP)
	$(BIN)/mlopsctl tools install

render: setup
	$(BIN)/mlopsctl render --out build/rendered

validate: setup
	$(BIN)/mlopsctl validate

lint: $(STAMP)
	$(BIN)/ruff check scripts tests
	$(BIN)/ruff format --check scripts tests
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# Three workers: the tests that run the platform on this machine (network namespaces, cgroups,
# the demo) share one, one after another (tests/conftest.py groups them), and mostly wait on it:
# measured, they keep 0.8 of a core busy. The other two take the rest, which keeps both cores
# busy. Four workers were slower than two for the rest alone (CPU-bound).
PYTEST_WORKERS ?= 3

test: setup lint typecheck
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m tests.benchmarks
	$(BIN)/python -m tests.benchmarks.registry

clean:
	rm -rf $(VENV) $(TOOLS) build .pytest_cache .mypy_cache .ruff_cache
