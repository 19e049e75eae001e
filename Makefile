# make demo: install into .venv (if needed) and run the whole job on the bundled sample corpus.
# make test: install (if needed) and run the default test suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hindi-bert-installed
DEMO_DIR ?= demo_output

.PHONY: demo test test-all lint install clean

install: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m beam_pipelines.build --output_dir $(DEMO_DIR)

test: $(STAMP)
	$(PY) -m pytest

test-all: $(STAMP)
	$(PY) -m pytest -m ""

lint: $(STAMP)
	$(PY) -m ruff check beam_pipelines trainer conversion tests benchmarks

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
