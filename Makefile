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

.PHONY: test lint typecheck unit local local-status chromium verify venv policy-venv bench bench-publish clean

test: lint typecheck unit

# uv installs the stack in seconds; plain pip is the fallback when uv cannot be had. Bytecode is
# compiled at install, as the container does at build, so local starts are as fast as deployed ones.
$(INSTALLED): requirements.txt requirements-dev.txt handler/requirements.txt emulator/requirements.txt \
              producer/requirements.txt
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
	$(BIN)/ruff check infra handler emulator producer local policy tests bench

typecheck: $(INSTALLED)
	$(BIN)/mypy

# The emulator is checked with the official Node client too.
NODE_CLIENT := tests/emulator/node_client

$(NODE_CLIENT)/node_modules/.package-lock.json: $(NODE_CLIENT)/package-lock.json
	cd $(NODE_CLIENT) && npm ci --no-audit --no-fund --silent
	@touch $@

chromium:
	@$(CHROMIUM_INSTALL)

unit: $(INSTALLED) $(NODE_CLIENT)/node_modules/.package-lock.json $(POLICY_VENV)/.installed chromium
	$(BIN)/python -m pytest

# Benchmarks compare with the peers their issues name; the handler runs from an environment holding
# only handler/requirements.txt, as in its image. Results, report and charts go to bench/out/.
HANDLER_VENV := .venv-handler
EXPRESS_PEER := bench/express-handler

$(HANDLER_VENV)/.installed: handler/requirements.txt $(INSTALLED)
	@test -x $(HANDLER_VENV)/bin/python || $(PYTHON) -m venv $(HANDLER_VENV)
	@$(BIN)/uv pip install -q --compile-bytecode --python $(HANDLER_VENV)/bin/python -r handler/requirements.txt \
	 || $(HANDLER_VENV)/bin/python -m pip install -q -r handler/requirements.txt
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
	$(BIN)/python -m producer.verify --stack $(STACK)

clean:
	rm -rf $(VENV) $(HANDLER_VENV) $(PEER_EMULATOR_VENV) $(POLICY_VENV) .pytest_cache .mypy_cache .ruff_cache
