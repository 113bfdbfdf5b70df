# Two commands do all set-up on a fresh machine: `make test` and `make demo`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: test demo setup db browser lint typecheck pytest pytest-nojit bench clean

$(BIN)/ubi: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(BIN)/ubi

db: setup
	$(BIN)/ubi db up

# The workbench's browser tests drive Debian's Chromium (a browser download is not possible).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver \
	  || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }; }

lint: setup
	$(BIN)/ruff check .

typecheck: setup
	$(BIN)/mypy

pytest: db browser
	$(BIN)/pytest -q

# The numba core's tests once more with the JIT off, so coverage sees inside kernels.
NOJIT_TESTS := $(wildcard tests/core tests/store)
pytest-nojit: db
	NUMBA_DISABLE_JIT=1 $(BIN)/pytest -q $(NOJIT_TESTS) -m "not slow"

test: lint typecheck pytest pytest-nojit

demo: db
	$(BIN)/ubi demo

bench: db
	$(BIN)/python bench/ingest_copy.py --quick

clean:
	-$(BIN)/ubi db down
	rm -rf $(VENV) .ubi
