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

DEMO_VOCAB ?= 8000
DEMO_STEPS ?= 2000
demo: $(STAMP)
	@echo "== 1/4 data: corpus, vocabulary, TFRecords (bundled OSCAR 23.01 sample)"
	$(PY) -m beam_pipelines.build --output_dir $(DEMO_DIR) --vocab_size $(DEMO_VOCAB)
	@echo "== 2/4 train a tiny BERT for $(DEMO_STEPS) steps on the CPU"
	rm -rf $(DEMO_DIR)/model
	$(PY) -m trainer.task --data_dir $(DEMO_DIR)/pretraining/seq128 --model_dir $(DEMO_DIR)/model \
		--model_size tiny --train_steps $(DEMO_STEPS) --batch_size 32 --learning_rate 1e-3 \
		--warmup_steps 200 --checkpoint_every 500 --eval_every 500 --eval_steps 10
	@echo "== 3/4 convert to a Hugging Face model and verify the logits"
	$(PY) -m conversion.convert --model_dir $(DEMO_DIR)/model --vocab_dir $(DEMO_DIR)/vocab \
		--output_dir $(DEMO_DIR)/hf --data_dir $(DEMO_DIR)/pretraining/seq128 --verify --overwrite
	@echo "== 4/4 fill-mask with transformers, offline"
	HF_HUB_OFFLINE=1 $(PY) -m conversion.fill_mask_demo --model_dir $(DEMO_DIR)/hf

test: $(STAMP)
	$(PY) -m pytest

test-all: $(STAMP)
	$(PY) -m pytest -m ""

lint: $(STAMP)
	$(PY) -m ruff check beam_pipelines trainer conversion tests benchmarks

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
