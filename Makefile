# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HASH   := $(shell cat pyproject.toml | sha1sum | cut -c1-12)
# Two stamps, so that trying the appliance does not install the test and lint toolchain:
# `make run` needs the runtime dependencies only; `make test` and `make lint` add the extras.
# A stamp names pyproject.toml's hash: an edited pyproject reinstalls, nothing else does.
RUN_STAMP  := $(VENV)/.installed-run-$(HASH)
TEST_STAMP := $(VENV)/.installed-test-$(HASH)

.PHONY: run test test-fast lint binary binary-dir clean

define make_venv
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "bindify needs Python 3.11 or newer")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
endef

$(RUN_STAMP): pyproject.toml
	$(make_venv)
	$(BIN)/python -m pip install --quiet -e '.[postgres]'
	@rm -f $(VENV)/.installed-run-* && touch $@

# The test environment holds the runtime one: once it is installed, `make run` installs nothing.
$(TEST_STAMP): pyproject.toml
	$(make_venv)
	$(BIN)/python -m pip install --quiet -e '.[test,postgres]'
	@rm -f $(VENV)/.installed-* && touch $@ $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/bindify serve

# Needs a passwordless PostgreSQL role on 127.0.0.1 that may create databases, and a Redis
# database the suite flushes (README "Development"); tests/preflight.py names what it will use.
# Bytecode is cached for test runs even where PYTHONDONTWRITEBYTECODE is set (this machine's
# environment and CI's set it): otherwise every run, and every xdist worker, re-compiles the
# package and re-rewrites the asserts of every test module (~15 s of CPU each). The cache lives
# under the venv (PYTHONPYCACHEPREFIX), so the checkout gets no __pycache__ folders.
TEST_ENV := PYTHONDONTWRITEBYTECODE= PYTHONPYCACHEPREFIX=$(abspath $(VENV))/pycache

test: $(TEST_STAMP)
	$(BIN)/python tests/preflight.py
	./tests/peers/ensure_mcp1.sh
	$(TEST_ENV) $(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Everything but the tests that start processes, drive Chromium, build artefacts or need the
# frozen binary (markers in pyproject.toml, applied by tests/support/plugin.py): the edit-test
# loop. Needs the same PostgreSQL and Redis as `make test`.
# Runs on FAST_WORKERS pytest-xdist workers, each with its own Redis database (README
# "Development"): two per core, at most 8, handing tests to whichever worker is free
# (`--dist worksteal`). Many fast tests wait on real time (keep-alive and timer tests, the
# PostgreSQL server), so a second worker per core fills the waits: on a quiet 2-core machine
# 4 workers took 56 s, 3 took 60 s and 2 took 73 s, at the same ~88 s of CPU.
# FAST_WORKERS=0: one process.
FAST_MARKERS := not process and not browser and not packaging and not binary
FAST_WORKERS ?= $(shell n=$$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2); \
                  n=$$((n * 2)); [ "$$n" -gt 8 ] && n=8; echo $$n)
test-fast: $(TEST_STAMP)
	$(BIN)/python tests/preflight.py --workers $(FAST_WORKERS)
	$(TEST_ENV) $(BIN)/python -m pytest -q -n $(FAST_WORKERS) --dist worksteal \
	  -m "$(FAST_MARKERS)" $(PYTEST_ARGS)

lint: $(TEST_STAMP)
	$(BIN)/ruff check bindify_appliance tests bench migrations packaging
	$(BIN)/ruff format --check bindify_appliance tests bench migrations packaging
	$(BIN)/mypy
	$(BIN)/mypy --config-file tests/mypy.ini tests
	$(BIN)/mypy --strict packaging/buildcheck.py packaging/entry.py packaging/rthooks/certs.py

# The frozen executable, built in its own hash-pinned venv (.venv-build), not the dev venv.
# binary: dist/bindify, one file (download and run). binary-dir: dist/bindify-dir/, one folder
# (systemd and Docker; no unpacking at start). README "Run it" says which where.
binary:
	PYTHON=$(PYTHON) ./packaging/build-binary.sh

binary-dir:
	PYTHON=$(PYTHON) ./packaging/build-binary.sh --onedir

clean:
	rm -rf build dist .venv-build .pytest_cache .mypy_cache .ruff_cache
