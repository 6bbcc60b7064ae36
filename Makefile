# Two commands do everything on a fresh machine: `make train` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# `make train TF_EXTRA=gpu` installs the CUDA build of TensorFlow instead of the CPU-only one.
TF_EXTRA ?= cpu

.PHONY: train test test-fast lint format bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(TF_EXTRA),dev]'
	touch $(STAMP)

# Train the default CartPole agent into runs/ (stops once the last-100 mean return is 475).
train: $(STAMP)
	$(PY) agents/cartpole.py

# The whole suite CI runs: fast tests plus the slow CartPole regressions.
test: $(STAMP)
	$(PY) -m pytest -m "slow or not slow" -q

# Only the fast tests (the default `pytest` selection).
test-fast: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check rlnorm agents tests benchmarks
	$(VENV)/bin/ruff format --check rlnorm agents tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff format rlnorm agents tests benchmarks
	$(VENV)/bin/ruff check --fix rlnorm agents tests benchmarks

# Throughput harness; `make bench SB3_PYTHON=/path/to/python` adds SB3's A2C side by side
# (a throwaway venv with stable-baselines3, see benchmarks/sb3_a2c.py).
bench: $(STAMP)
	$(PY) benchmarks/throughput.py --cpu 0 $(if $(SB3_PYTHON),--sb3-python $(SB3_PYTHON) --repeats 3)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
