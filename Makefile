# Two commands set everything up on a fresh machine:
#   make demo   creates .venv, installs vidgen, runs the main job on Moving Shapes
#   make test   installs the test extras (PyTorch CPU, diffusers, transformers) and runs the suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DEMO_DIR ?= out/demo
PYTEST_ARGS ?=

.PHONY: install install-test demo test bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# Re-install only when setup.py changes.
$(VENV)/.installed: setup.py | $(VENV)/bin/python
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-test: setup.py $(VENV)/.installed
	$(PIP) install "torch==2.13.0"
	$(PIP) install -e ".[test,interop]"
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

# Until the DiT lands, the main job prepares Moving Shapes (array_record splits
# and the tokenizer) and draws clips from the input pipeline.
demo: install
	JAX_PLATFORMS=cpu $(PY) -m vidgen.prepare --config=configs/shapes/data.py \
	  --workdir=$(DEMO_DIR) --mode=build,tokenizer,sheet --num=12
	@echo "demo output: $(DEMO_DIR)/contact_sheet.png and $(DEMO_DIR)/clips/"

test: install-test
	JAX_PLATFORMS=cpu $(PY) -m pytest -n 2 $(PYTEST_ARGS) tests

bench: install
	JAX_PLATFORMS=cpu $(PY) -m vidgen.bench.data

clean:
	rm -rf $(VENV) out .pytest_cache
