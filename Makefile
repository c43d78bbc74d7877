# The README's two commands: `make demo` and `make test`. Both build .venv from scratch when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch 2.13.0 is pinned because its CPU wheel is on this machine's disk; any torch >= 2.4 works elsewhere.
TORCH ?= torch==2.13.0
MINUTES ?= 10

.PHONY: venv demo test bench clean

$(BIN)/counterfeit: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

venv: $(BIN)/counterfeit

demo: venv
	$(BIN)/counterfeit demo --out runs/demo --minutes $(MINUTES)

test: venv
	$(BIN)/python -m pytest -q

bench: venv
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache
