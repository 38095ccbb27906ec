# `make demo` and `make test` each build .venv when it is missing or stale.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PLUGINS := $(wildcard plugins/*/pyproject.toml)
DEMO_OUT ?= runs/demo

export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test install clean help

help:
	@echo "make demo   - set up .venv, pretrain brivl-tiny on the synthetic data, evaluate"
	@echo "make test   - set up .venv, run the whole test suite"
	@echo "make clean  - remove .venv and runs/"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt $(PLUGINS)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]" $(foreach p,$(PLUGINS),-e $(dir $(p)))
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/wenlan pretrain --out $(DEMO_OUT)
	$(BIN)/wenlan eval-retrieval --checkpoint $(DEMO_OUT) --dataset synth --split val

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
