# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: run test lint binary binary-dir bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "bindify needs Python 3.11 or newer")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,postgres]'
	@rm -f $(VENV)/.installed-* && touch $@

run: $(STAMP)
	$(BIN)/bindify serve

test: $(STAMP)
	$(BIN)/python tests/preflight.py
	./tests/peers/ensure_mcp1.sh
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check bindify_appliance tests bench migrations packaging
	$(BIN)/ruff format --check bindify_appliance tests bench migrations packaging
	$(BIN)/mypy
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
