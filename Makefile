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

# The phone runtimes' exports (LiteRT, ExecuTorch, Core ML) in their own environment layered on the dev one: it sees
# the dev environment's packages (torch is not installed twice) and holds only the toolchains (about 1.5 GB), so that
# litert-torch's older typing-extensions stays out of the dev environment. The export extras, since the tests write
# files: each also holds its format's runtime (export-litert the LiteRT interpreter; executorch is one package).
RT_VENV ?= .venv-runtimes
$(RT_VENV)/.installed: $(VENV)/.installed
	$(PYTHON) -m venv $(RT_VENV)
	$(BIN)/python -c "import sysconfig; print('import site; site.addsitedir(%r)' % sysconfig.get_paths()['purelib'])" \
		> "$$($(RT_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/dev_environment.pth"
	$(RT_VENV)/bin/python -m pip install --quiet -e ".[export-litert,executorch,coreml]"
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
