# The project's two commands: `make local` and `make test`. Everything they need is installed
# into .venv from the project's own requirement files.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
UV_VERSION := 0.13.9

.PHONY: test lint typecheck unit local venv clean

test: lint typecheck unit

# uv installs the stack in seconds; plain pip is the fallback when uv cannot be had.
$(INSTALLED): requirements.txt requirements-dev.txt handler/requirements.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@{ $(BIN)/python -m pip install -q uv==$(UV_VERSION) && \
	   $(BIN)/uv pip install -q --python $(BIN)/python -r requirements-dev.txt; } || \
	 $(BIN)/python -m pip install -q -r requirements-dev.txt
	@touch $(INSTALLED)

venv: $(INSTALLED)

lint: $(INSTALLED)
	$(BIN)/ruff check infra handler tests

typecheck: $(INSTALLED)
	$(BIN)/mypy

unit: $(INSTALLED)
	$(BIN)/python -m pytest

local:
	@echo "make local runs the whole pipeline on the local Cloud Tasks emulator."
	@echo "It is not available yet: it arrives with the emulator and producer (issues 5 and 6)."
	@echo "Until then: 'make test' runs the tests, and the README explains how to deploy with Pulumi."
	@exit 1

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
