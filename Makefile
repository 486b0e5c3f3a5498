# `make demo` and `make test` each create .venv from setup.py on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_WORKDIR ?= runs/demo_s1

.PHONY: demo quick test test-all bench venv clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,datasets]"
	touch $(STAMP)

venv: $(STAMP)

# The main job: the subject-wise S1 protocol on the embedded dataset, every stage, printed tables.
demo: $(STAMP)
	$(PY) -m experiments.main --protocol=subject_s1 --workdir=$(DEMO_WORKDIR)

# Every stage on a few frames (about a minute): a smoke test of the whole method.
quick: $(STAMP)
	$(PY) -m experiments.main --protocol=quick --workdir=runs/quick

# Tests run in parallel worker processes (pytest-xdist), each test file wholly on one worker, so a
# file's module fixtures (the quick run of tests/test_experiments.py) are built once. The suite
# is compile- and trace-bound (one Python thread each), so workers use the cores one process
# leaves idle (timings: README "Tests"). Workers: the logical cores, at most 4;
# TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= logical
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --maxprocesses=4 --dist loadfile

test: $(STAMP)
	$(PYTEST) -m "not slow" tests

test-all: $(STAMP)
	$(PYTEST) tests

bench: $(STAMP)
	$(PY) benchmarks/completion_bench.py
	$(PY) benchmarks/data_bench.py
	$(PY) benchmarks/train_bench.py --config tiny

clean:
	rm -rf $(VENV) build *.egg-info
