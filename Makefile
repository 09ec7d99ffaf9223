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
	$(PIP) install -e ".[test,interop,tpu]"
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

# The main job on a fresh machine: build Moving Shapes and its tokenizer, train
# the VAE, cache its latents, train the DiT and generate a video per prompt
# (test-split captions and held-out compositions), checked from the pixels.
# QUICK=1 gives a first look in under 10 minutes (short runs, few prompts).
ifeq ($(QUICK),1)
VAE_MINUTES ?= 3
VAE_STEPS ?= 1300
DIT_MINUTES ?= 3
DIT_STEPS ?= 1200
LATENTS ?= 800
PROMPTS ?= 8
else
VAE_MINUTES ?= 17
VAE_STEPS ?= 6000
DIT_MINUTES ?= 20
DIT_STEPS ?= 12000
LATENTS ?= 4000
PROMPTS ?= 48
endif
DATA_DIR := $(DEMO_DIR)/data
RUN := JAX_PLATFORMS=cpu $(PY) -m
DIT := configs/shapes/dit.py:vae=$(DEMO_DIR)/vae,latents=$(DEMO_DIR)/latents
demo: install
	$(RUN) vidgen.prepare --config=configs/shapes/data.py --workdir=$(DEMO_DIR) \
	  --mode=build,tokenizer,sheet --num=12 --config.data.data_dir=$(DATA_DIR)
	$(RUN) vidgen.train --config=configs/shapes/vae.py:minutes=$(VAE_MINUTES),steps=$(VAE_STEPS) \
	  --workdir=$(DEMO_DIR)/vae --config.data.data_dir=$(DATA_DIR)
	$(RUN) vidgen.prepare --config=$(DIT) --mode=latents --split=train --num=$(LATENTS) \
	  --out=$(DEMO_DIR)/latents/train --config.data.data_dir=$(DATA_DIR)
	$(RUN) vidgen.prepare --config=$(DIT) --mode=latents --split=test --num=64 \
	  --out=$(DEMO_DIR)/latents/test --config.data.data_dir=$(DATA_DIR)
	$(RUN) vidgen.train --config=$(DIT),minutes=$(DIT_MINUTES),steps=$(DIT_STEPS) \
	  --workdir=$(DEMO_DIR)/dit --config.data.data_dir=$(DATA_DIR)
	$(RUN) vidgen.prepare --config=$(DIT) --mode=prompts --split=test --num=$(PROMPTS) \
	  --out=$(DEMO_DIR)/prompts_test.txt --config.data.data_dir=$(DATA_DIR)
	$(RUN) vidgen.prepare --config=$(DIT) --mode=prompts --split=holdout --num=$(PROMPTS) \
	  --out=$(DEMO_DIR)/prompts_holdout.txt --config.data.data_dir=$(DATA_DIR)
	cat $(DEMO_DIR)/prompts_test.txt $(DEMO_DIR)/prompts_holdout.txt > $(DEMO_DIR)/prompts.txt
	$(RUN) vidgen.sample --config=$(DIT) --workdir=$(DEMO_DIR)/dit \
	  --prompts=$(DEMO_DIR)/prompts.txt --out=$(DEMO_DIR)/samples --check_shapes \
	  --config.data.data_dir=$(DATA_DIR)
	@echo "demo output: $(DEMO_DIR)/samples/ (index.html, contact_sheet.png, samples.jsonl,"
	@echo "  accuracy.json, one mp4 per prompt); training pictures in $(DEMO_DIR)/vae/pictures/"
	@echo "  and $(DEMO_DIR)/dit/pictures/; data contact sheet $(DEMO_DIR)/contact_sheet.png"

test: install-test
	JAX_PLATFORMS=cpu $(PY) -m pytest -n 2 --durations=25 $(PYTEST_ARGS) tests

bench: install-test
	JAX_PLATFORMS=cpu $(PY) -m vidgen.bench.data
	JAX_PLATFORMS=cpu $(PY) -m vidgen.bench.vae
	JAX_PLATFORMS=cpu $(PY) -m vidgen.bench.flops
	JAX_PLATFORMS=cpu $(PY) -m vidgen.bench.train_step

clean:
	rm -rf $(VENV) out .pytest_cache
