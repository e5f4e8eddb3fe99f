# The two set-up commands (README): `make compare` and `make test`. Each creates the virtual
# environment on first use: PyTorch first (the CPU build by default), then ncollapse itself.
PYTHON ?= python3
VENV ?= .venv
# Any torch >= 2.2 works; this pin installs the CPU build on the project's machines. Elsewhere:
#   make compare TORCH="torch --index-url https://download.pytorch.org/whl/cpu"
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ncollapse-installed

.PHONY: install compare test test-fast lint format benchmarks clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

compare: $(STAMP)  ## CE baseline vs ETF + DR on the embedded long-tailed digits
	$(VENV)/bin/ncollapse compare

test: $(STAMP)  ## the whole test suite (slow and CIFAR tests included; CIFAR ones skip without the data)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks

benchmarks: $(STAMP)
	$(PY) benchmarks/throughput.py
	$(PY) benchmarks/collapse_metrics.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
