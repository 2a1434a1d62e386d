# Quick start:  make demo   (set up, then run the main job)
#               make test   (set up, then run the test suite)
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test test-all clean
setup:
	bash tools/setup.sh

demo: setup
	$(VENV)/bin/edgeseg demo

test: setup
	OMP_NUM_THREADS=2 $(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-all: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) out .pytest_cache
