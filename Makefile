# `make demo` and `make test` each create .venv from setup.py on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-all bench venv clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,datasets]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m completion.demo

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

test-all: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) benchmarks/completion_bench.py

clean:
	rm -rf $(VENV) build *.egg-info
