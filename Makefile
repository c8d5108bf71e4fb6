# The README's commands. `make test` is what CI (.ci/run) calls; `make demo` runs the whole pipeline offline on CPU.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo_out
DEMO_ARGS ?=

.PHONY: setup test test-runtimes lint demo demo-small clean-demo

setup: $(VENV)/.installed

# One-time install: torch + torchvision (several GB; pip may take them from the machine's disk), then the project.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

lint: setup
	$(BIN)/ruff check .

test: setup
	$(BIN)/ruff check .
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# The phone runtimes' exports (LiteRT, ExecuTorch, Core ML) in their own environment: the toolchains add about
# 1.5 GB and litert-torch pins typing-extensions, so they stay out of the dev environment.
RT_VENV ?= .venv-runtimes
$(RT_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(RT_VENV)
	$(RT_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(RT_VENV)/bin/python -m pip install --quiet -e ".[dev,litert,executorch,coreml]"
	touch $@

test-runtimes: $(RT_VENV)/.installed
	HF_HUB_OFFLINE=1 $(RT_VENV)/bin/python -m pytest -q tests/deploy_runtimes

demo: setup
	HF_HUB_OFFLINE=1 PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m demo --out $(DEMO_OUT) $(DEMO_ARGS)

# The same pipeline at a reduced size, for CI.
demo-small: setup
	HF_HUB_OFFLINE=1 PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m demo --out $(DEMO_OUT) --small $(DEMO_ARGS)

clean-demo:
	rm -rf $(DEMO_OUT)
