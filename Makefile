# The README's commands. `make test` is what CI (.ci/run) calls; `make demo` runs the whole pipeline offline on CPU.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo_out
DEMO_ARGS ?=

.PHONY: setup test lint demo demo-small clean-demo

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

demo: setup
	HF_HUB_OFFLINE=1 PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m demo --out $(DEMO_OUT) $(DEMO_ARGS)

# The same pipeline at a reduced size, for CI.
demo-small: setup
	HF_HUB_OFFLINE=1 PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m demo --out $(DEMO_OUT) --small $(DEMO_ARGS)

clean-demo:
	rm -rf $(DEMO_OUT)
