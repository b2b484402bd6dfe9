# Every target sets itself up: a virtual environment in $(VENV), the project installed
# into it, and the offline data. Override PYTHON or VENV on the command line if needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# torch / torchvision come first and pinned: this pair imports together on the CPU.
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: demo streams test test-slow lint bench setup data clean

demo: setup data
	$(BIN)/nsr prepare
	$(BIN)/nsr sweep configs/quick.yaml --out results/quick --jobs 2
	$(BIN)/nsr report results/quick

streams: setup data
	$(BIN)/nsr sweep configs/streams.yaml --out results/streams --jobs 2
	$(BIN)/nsr retrieval --scenario long --out results/streams
	$(BIN)/nsr report results/streams

test: setup data
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

test-slow: setup data
	$(BIN)/python -m pytest -q -m slow

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup data
	$(BIN)/python benchmarks/feature_cache.py
	$(BIN)/python benchmarks/decision_step.py
	$(BIN)/python benchmarks/bank.py
	$(BIN)/python benchmarks/env_step.py
	$(BIN)/python benchmarks/sweep_jobs.py
	$(BIN)/python benchmarks/task_library.py
	$(BIN)/python benchmarks/long_stream.py
	$(BIN)/python benchmarks/memories.py
	$(BIN)/python benchmarks/vector_env.py

setup: $(INSTALLED)

$(INSTALLED): pyproject.toml
	$(BIN)/python -m pip --version >/dev/null 2>&1 || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev,distributed]'
	touch $@

data:
	@scripts/ensure-data.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
