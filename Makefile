# The two commands of the README:  make install   and   make test
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install test lint check-imports unit bench clean

install: $(VENV)/.installed

# torch is installed first and pinned: 2.13.0 is the CPU build on the development
# machines; an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,postgres]'
	touch $@

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

check-imports: install
	$(BIN)/lint-imports

unit: install
	PATH="$(abspath $(BIN)):$$PATH" scripts/with_postgres.sh $(BIN)/pytest

test: lint check-imports unit

bench: install
	$(BIN)/python bench/model_speed.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
