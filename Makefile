# Two entry points, both starting from nothing: `make fit` trains, `make test` runs the test suite (CI runs it);
# `make test-quick` runs only the tests not marked slow (about 20 s).
# Each creates .venv with pip on first use and refreshes it when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MODEL ?= fast
ARGS ?=

.PHONY: venv fit test test-quick
venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

fit: venv
	$(PY) -m mnist_lit.cli fit --model $(MODEL) $(ARGS)

test: venv
	$(PY) -m pytest $(ARGS)

test-quick: venv
	$(PY) -m pytest -m "not slow" $(ARGS)
