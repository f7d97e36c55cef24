# The project's two commands: `make local` and `make test`. Everything they need is installed
# into .venv from the project's own requirement files.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
UV_VERSION := 0.13.9

# The console's browser test drives Debian's chromium (CI runs as root on Debian); elsewhere it is skipped.
CHROMIUM_INSTALL := command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
	|| (sudo -n apt-get update -qq && sudo -n apt-get install -y -qq chromium >/dev/null) \
	|| echo "chromium could not be installed: the console's browser test will be skipped (CI fails it)"

.PHONY: test lint typecheck unit local local-status chromium verify venv policy-venv dist bench bench-publish clean

test: lint typecheck unit

# uv installs the stack in seconds; plain pip is the fallback when uv cannot be had. Bytecode is
# compiled at install, as the container does at build, so local starts are as fast as deployed ones.
$(INSTALLED): requirements.txt requirements-dev.txt handler/requirements.txt emulator/requirements.txt \
              producer/requirements.txt core/pyproject.toml framework/pyproject.toml producer/pyproject.toml \
              emulator/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@{ $(BIN)/python -m pip install -q uv==$(UV_VERSION) && \
	   $(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -r requirements-dev.txt; } || \
	 $(BIN)/python -m pip install -q -r requirements-dev.txt
	@touch $(INSTALLED)

venv: $(INSTALLED)

# The policy pack's own environment (pulumi-policy pins an older protobuf); Pulumi runs the pack from it.
POLICY_VENV := policy/.venv

$(POLICY_VENV)/.installed: policy/requirements.txt $(INSTALLED)
	@test -x $(POLICY_VENV)/bin/python || $(PYTHON) -m venv $(POLICY_VENV)
	@$(BIN)/uv pip install -q --python $(POLICY_VENV)/bin/python -r policy/requirements.txt \
	 || $(POLICY_VENV)/bin/python -m pip install -q -r policy/requirements.txt
	@touch $@

policy-venv: $(POLICY_VENV)/.installed

lint: $(INSTALLED)
	$(BIN)/ruff check infra core framework handler emulator producer local policy tests bench

typecheck: $(INSTALLED)
	$(BIN)/mypy

# The emulator is checked with the official Node client too.
NODE_CLIENT := tests/emulator/node_client

$(NODE_CLIENT)/node_modules/.package-lock.json: $(NODE_CLIENT)/package-lock.json
	cd $(NODE_CLIENT) && npm ci --no-audit --no-fund --silent
	@touch $@

chromium:
	@$(CHROMIUM_INSTALL)

# The four distributions as users install them: wheels and sdists in dist/, rebuilt only when their files change.
DISTRIBUTIONS := core framework producer emulator
DIST := dist
DISTRIBUTION_FILES := $(shell find $(DISTRIBUTIONS) -type f -not -path '*/__pycache__/*' -not -name '*.pyc')

$(DIST)/.built: $(INSTALLED) $(DISTRIBUTION_FILES)
	@rm -rf $(DIST) && mkdir -p $(DIST)
	@for d in $(DISTRIBUTIONS); do $(BIN)/uv build -q --out-dir $(DIST) $$d \
	  || $(BIN)/python -m pip wheel -q --no-deps -w $(DIST) ./$$d || exit 1; done
	@touch $@

dist: $(DIST)/.built

# Two pytest workers (pytest-xdist), one per core here; PYTEST_WORKERS=0 runs in one process. Tests that share
# a session fixture costly to make twice (the installed distributions) run on one worker (xdist_group).
PYTEST_WORKERS ?= 2

unit: $(INSTALLED) $(NODE_CLIENT)/node_modules/.package-lock.json $(POLICY_VENV)/.installed chromium $(DIST)/.built
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup --durations=15

# Benchmarks compare with the peers their issues name; the handler runs from an environment holding only what
# its image does: handler/requirements.txt and the framework's wheels. Results, report and charts go to bench/out/.
HANDLER_VENV := .venv-handler
EXPRESS_PEER := bench/express-handler

$(HANDLER_VENV)/.installed: handler/requirements.txt $(INSTALLED) $(DIST)/.built
	@test -x $(HANDLER_VENV)/bin/python || $(PYTHON) -m venv $(HANDLER_VENV)
	@$(BIN)/uv pip install -q --compile-bytecode --python $(HANDLER_VENV)/bin/python -r handler/requirements.txt \
	 $(DIST)/tasklane_core-*.whl $(DIST)/tasklane_handler-*.whl \
	 || $(HANDLER_VENV)/bin/python -m pip install -q -r handler/requirements.txt $(DIST)/tasklane_core-*.whl \
	    $(DIST)/tasklane_handler-*.whl
	@touch $@

# npm writes node_modules/.package-lock.json at the end of a successful install.
$(EXPRESS_PEER)/node_modules/.package-lock.json: $(EXPRESS_PEER)/package-lock.json
	cd $(EXPRESS_PEER) && npm ci --no-audit --no-fund --silent
	@touch $@

PEER_EMULATOR_VENV := .venv-peer-emulator

$(PEER_EMULATOR_VENV)/.installed: bench/peer-emulator-requirements.txt $(INSTALLED)
	@test -x $(PEER_EMULATOR_VENV)/bin/python || $(PYTHON) -m venv $(PEER_EMULATOR_VENV)
	@$(BIN)/uv pip install -q --compile-bytecode --python $(PEER_EMULATOR_VENV)/bin/python \
	 -r bench/peer-emulator-requirements.txt \
	 || $(PEER_EMULATOR_VENV)/bin/python -m pip install -q -r bench/peer-emulator-requirements.txt
	@touch $@

# The emulator before issue 11's validation, for its before/after throughput.
EMULATOR_VALIDATION_BASELINE ?= cc912de

bench: $(INSTALLED) $(HANDLER_VENV)/.installed $(EXPRESS_PEER)/node_modules/.package-lock.json \
       $(PEER_EMULATOR_VENV)/.installed
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; } \
	 || { echo "make bench needs wrk (Debian/Ubuntu: apt-get install wrk)"; exit 1; }
	$(HANDLER_VENV)/bin/python -m compileall -q handler
	$(BIN)/python bench/handler_bench.py --handler-python $(HANDLER_VENV)/bin/python
	$(BIN)/python bench/emulator_bench.py --peer-python $(PEER_EMULATOR_VENV)/bin/python
	$(BIN)/python bench/pipeline_bench.py --handler-python $(HANDLER_VENV)/bin/python
	$(BIN)/python bench/emulator_rest_bench.py
	$(BIN)/python bench/producer_bench.py
	$(BIN)/python bench/console_bench.py
	$(BIN)/python bench/emulator_hardening_bench.py --baseline $(EMULATOR_VALIDATION_BASELINE)
	$(BIN)/python bench/firestore_bench.py --handler-python $(HANDLER_VENV)/bin/python
	$(BIN)/python bench/report.py

# make bench writes under bench/out/ (ignored by git); this copies its last run into the committed
# bench/results/, bench/RESULTS.md and bench/charts/.
bench-publish: $(INSTALLED)
	$(BIN)/python bench/report.py --publish

# The README's main command: emulator, handler and sample orders on this machine, until Ctrl-C. Ports and
# options as make variables: make local GRPC_PORT=18123 EMULATOR_HTTP_PORT=18124 HANDLER_PORT=18080
# STATE_DIR=/tmp/tl LOCAL_ARGS=--once
GRPC_PORT ?= 8123
EMULATOR_HTTP_PORT ?= 8124
HANDLER_PORT ?= 8080
STATE_DIR ?= .tasklane
LOCAL_ARGS ?=

local: $(INSTALLED)
	$(BIN)/python -m local --grpc-port $(GRPC_PORT) --emulator-http-port $(EMULATOR_HTTP_PORT) \
	 --handler-port $(HANDLER_PORT) --state-dir $(STATE_DIR) $(LOCAL_ARGS)

# A running `make local`'s queues, recent outcomes and dead letters, in the terminal.
local-status: $(INSTALLED)
	$(BIN)/python -m local status --emulator-http-port $(EMULATOR_HTTP_PORT)

# After a deploy: a smoke task through the stack's queue, waited for until the handler has processed it.
verify: $(INSTALLED)
	@test -n "$(STACK)" || { echo "usage: make verify STACK=dev (a deployed Pulumi stack)"; exit 2; }
	$(BIN)/python -m tasklane.producer.verify --stack $(STACK)

clean:
	rm -rf $(VENV) $(HANDLER_VENV) $(PEER_EMULATOR_VENV) $(POLICY_VENV) $(DIST) .pytest_cache .mypy_cache .ruff_cache
