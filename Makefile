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

# Until the DiT lands, the main job prepares Moving Shapes, trains the stage-1
# VAE for DEMO_MINUTES and evaluates it.
DEMO_MINUTES ?= 5
DEMO_STEPS ?= 1300
demo: install
	JAX_PLATFORMS=cpu $(PY) -m vidgen.prepare --config=configs/shapes/data.py \
	  --workdir=$(DEMO_DIR) --mode=build,tokenizer,sheet --num=12
	JAX_PLATFORMS=cpu $(PY) -m vidgen.train \
	  --config=configs/shapes/vae.py:minutes=$(DEMO_MINUTES),steps=$(DEMO_STEPS) \
	  --workdir=$(DEMO_DIR)/vae
	JAX_PLATFORMS=cpu $(PY) -m vidgen.evaluate --config=configs/shapes/vae.py \
	  --workdir=$(DEMO_DIR)/vae --config.data.buckets=17x64x64:8
	@echo "demo output: $(DEMO_DIR)/contact_sheet.png, $(DEMO_DIR)/clips/,"
	@echo "  $(DEMO_DIR)/vae/pictures/ and $(DEMO_DIR)/vae/eval/vae_test.png"

test: install-test
	JAX_PLATFORMS=cpu $(PY) -m pytest -n 2 $(PYTEST_ARGS) tests

bench: install-test
	JAX_PLATFORMS=cpu $(PY) -m vidgen.bench.data
	JAX_PLATFORMS=cpu $(PY) -m vidgen.bench.vae

clean:
	rm -rf $(VENV) out .pytest_cache
