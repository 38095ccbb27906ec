# `make demo` and `make test` each build .venv when it is missing or stale.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PLUGINS := $(wildcard plugins/*/pyproject.toml)
DEMO_OUT ?= runs/demo
CAPTION_OUT ?= runs/caption
CAPTION_ARGS ?=

export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo demo-caption test install clean help

help:
	@echo "make demo   - set up .venv, pretrain brivl-tiny on the synthetic data, evaluate"
	@echo "make demo-caption - after make demo: fine-tune a Chinese captioner on the synthetic data, score it"
	@echo "make test   - set up .venv, run the whole test suite"
	@echo "make clean  - remove .venv and runs/"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt $(PLUGINS)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,faiss]" $(foreach p,$(PLUGINS),-e $(dir $(p)))
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/wenlan pretrain --out $(DEMO_OUT)
	$(BIN)/wenlan eval-retrieval --checkpoint $(DEMO_OUT) --dataset synth --split val

# Needs the pretrain checkpoint of `make demo` (run it first).
demo-caption: $(STAMP)
	@test -f $(DEMO_OUT)/final/config.json || { echo "No pretrain checkpoint in $(DEMO_OUT): run 'make demo' first." >&2; exit 2; }
	$(BIN)/wenlan finetune-caption --checkpoint $(DEMO_OUT) --out $(CAPTION_OUT) $(CAPTION_ARGS)
	$(BIN)/wenlan caption --dataset synth --split val --checkpoint $(CAPTION_OUT) -o $(CAPTION_OUT)/val_captions.json
	$(BIN)/python -c "import json; [print(c['caption']) for c in json.load(open('$(CAPTION_OUT)/val_captions.json'))[:5]]"

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
