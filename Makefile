# The two set-up commands (README): `make compare` and `make test`. Each creates the virtual
# environment on first use: PyTorch first (the CPU build by default), then ncollapse itself.
PYTHON ?= python3
VENV ?= .venv
# Any torch >= 2.2 works; this pin installs the CPU build on the project's machines. Elsewhere:
#   make compare TORCH="torch --index-url https://download.pytorch.org/whl/cpu"
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ncollapse-installed

.PHONY: install compare test test-fast lint format benchmarks docs docs-serve docs-config clean

install: $(STAMP)

# The optional integrations (Lightning, torchmetrics) are installed too, so that their tests run;
# torch is pinned to the build installed first, so that no extra can replace it (with a CUDA
# build, say).
EXTRAS ?= dev,lightning,torchmetrics
PIN := $(VENV)/torch-pin.txt

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -W ignore -c "import torch; print('torch==' + torch.__version__)" > $(PIN)
	$(PY) -m pip install --quiet --constraint $(PIN) -e ".[$(EXTRAS)]"
	$(PY) -W ignore -c "import torch, sys; sys.exit(f'torch {torch.__version__} replaced the pinned build' if 'torch==' + torch.__version__ != open('$(PIN)').read().strip() else 0)"
	touch $(STAMP)

compare: $(STAMP)  ## CE baseline vs ETF + DR on the embedded long-tailed digits
	$(VENV)/bin/ncollapse compare

test: $(STAMP)  ## the whole test suite (slow and CIFAR tests included; CIFAR ones skip without the data)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks tools
	$(VENV)/bin/ruff format --check src tests benchmarks tools

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks tools

docs: $(STAMP)  ## the documentation site in site/; a broken link or API reference fails the build
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

docs-serve: $(STAMP)  ## preview the site at http://127.0.0.1:8000
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

docs-config: $(STAMP)  ## regenerate docs/config.md from the config dataclasses
	$(PY) -m ncollapse.reference --write docs/config.md

benchmarks: $(STAMP)
	$(PY) benchmarks/throughput.py
	$(PY) benchmarks/collapse_metrics.py

clean:
	rm -rf $(VENV) runs site .pytest_cache .ruff_cache
