# compactnas: `make demo` and `make test` set everything up on a fresh machine, from the lock.
#
# requirements/demo.lock  what the demo runs (pyproject's dependencies), every package pinned with hashes
# requirements/test.lock  the same plus the dev and edge extras: the environment the tests pass in
# `make lock` regenerates both from pyproject.toml's ranges (uv pip compile); `make test-latest` runs the suite on the
# newest releases those ranges admit, unpinned, to see an upstream break before users do.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check
DEMO_LOCK := requirements/demo.lock
TEST_LOCK := requirements/test.lock
# torch and torchvision are pinned together (torchvision from another torch build does not import);
# the locks hold the same pair, requirements/pins.in says so to pip-compile.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
UV ?= uv==0.13.8
LOCK_VENV  ?= .venv-lock
LATEST_VENV ?= .venv-latest
DEMO_OUT ?= runs/demo

.PHONY: install install-demo demo test test-fast test-latest lint lock bench clean

# Each stamp records which lock the environment was installed from: a changed lock reinstalls.
$(VENV)/.demo-installed: $(DEMO_LOCK) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --require-hashes --no-deps -r $(DEMO_LOCK)
	$(PIP) install --quiet --no-deps -e .
	touch $@

$(VENV)/.test-installed: $(TEST_LOCK) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --require-hashes --no-deps -r $(TEST_LOCK)
	$(PIP) install --quiet --no-deps -e .
	touch $@ $(VENV)/.demo-installed

install-demo: $(VENV)/.demo-installed

install: $(VENV)/.test-installed

demo: install-demo
	rm -rf $(DEMO_OUT)
	$(BIN)/compactnas search --config configs/demo.yaml --out $(DEMO_OUT)

# Static tools cannot follow setuptools' package-dir mapping (folders at the top, compactnas.* when
# installed), so the type checker reads a tree of links laid out as the installed package is.
TYPING := build/typing/compactnas

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	rm -rf $(TYPING) && mkdir -p $(TYPING)
	for f in compactnas/*.py; do ln -s ../../../$$f $(TYPING)/; done
	for d in core spaces evaluators hw_profiles search; do ln -s ../../../$$d $(TYPING)/$$d; done
	$(BIN)/basedpyright --pythonpath $(BIN)/python
	$(BIN)/basedpyright -p pyrightconfig.api.json --pythonpath $(BIN)/python

# Each test runs torch on one thread (tests/conftest.py), so one pytest process per core; a file's
# tests stay on one worker, where its module fixtures (a Ray cluster, a server) are built once.
# `make test TEST_WORKERS=0` runs them in one process.
TEST_WORKERS ?= 2
XDIST := $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)
PYTEST := $(BIN)/python -m pytest -q $(XDIST)

test: lint
	$(PYTEST)

test-fast: install
	$(PYTEST) -m "not slow"

# The drift check: a second environment from pyproject's ranges alone, upgraded to the newest releases.
test-latest:
	test -x $(LATEST_VENV)/bin/python || $(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager \
		-e '.[dev,edge]' $(TORCH_SPEC)
	$(LATEST_VENV)/bin/python -m pip freeze --exclude-editable > $(LATEST_VENV)/freeze.txt
	$(LATEST_VENV)/bin/python -m pytest -q -p no:cacheprovider $(XDIST)

# Regenerate the locks from pyproject.toml's ranges at today's newest releases, with hashes. uv reads the
# hashes the index publishes (pip-compile downloads every file of every pinned release to hash it). The
# demo lock is constrained by the test lock, so the two agree on every package they share.
lock:
	test -x $(LOCK_VENV)/bin/uv || \
		($(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/python -m pip install --quiet $(UV))
	$(LOCK_VENV)/bin/uv pip compile --quiet --upgrade --generate-hashes --python $(PYTHON) \
		--extra dev --extra edge -o $(TEST_LOCK) pyproject.toml requirements/pins.in
	$(LOCK_VENV)/bin/uv pip compile --quiet --upgrade --generate-hashes --python $(PYTHON) \
		-c $(TEST_LOCK) -o $(DEMO_LOCK) pyproject.toml requirements/pins.in

bench: install
	$(BIN)/python benchmarks/run_all.py --quick

clean:
	rm -rf runs .pytest_cache .ruff_cache
