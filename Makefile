# make train: set up .venv and run the default experiment.  make test: set up .venv (and headless Chromium and espeak-ng,
# .ci/test-deps) and run every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install train test test-deps test-fast lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first: the pinned CPU build, so nothing else can pull a CUDA one.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	$(BIN)/lmforge train $(ARGS)

test-deps:
	@.ci/test-deps

test: $(STAMP) test-deps
	$(BIN)/python -m pytest -n auto --dist loadgroup $(ARGS)

test-fast: $(STAMP) test-deps
	$(BIN)/python -m pytest -n auto --dist loadgroup -m "not slow" $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
