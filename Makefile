# `make demo`: set up .venv and run the demo recipe end to end. `make test`: set up and run the tests.
# `make check`: static checks of the package (ruff lint and format, mypy), as CI runs them.
# On a machine without the local CPU wheel, choose your PyTorch build: make TORCH_SPEC=torch demo
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN = $(VENV)/bin

.PHONY: setup demo test check clean-demo

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev,eval]"
	touch $@

demo: setup
	PATH="$(abspath $(BIN)):$$PATH" bash recipes/demo/run.sh

test: setup
	$(BIN)/python -m pytest -q

check: setup
	$(BIN)/ruff check vqspeech
	$(BIN)/ruff format --check vqspeech
	$(BIN)/mypy

clean-demo:
	rm -rf data/demo exp/demo
