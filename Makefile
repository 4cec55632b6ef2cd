# The two commands of the README:  make install   and   make test
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install demo test lint check-imports docker-lint unit bench clean

install: $(VENV)/.installed

# torch is installed first and pinned: 2.13.0 is the CPU build on the development
# machines; an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,postgres]'
	touch $@

# README command one: build (or reuse) the demo collection and serve it, e.g.
#   make demo DEMO_ARGS="--data ../shared/data/ham10000 --port 8001"
DEMO_ARGS ?=
demo: install
	$(BIN)/medret demo $(DEMO_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

check-imports: install
	$(BIN)/lint-imports

# Static checks of the deployment files (no Docker engine needed): the Dockerfiles with
# hadolint, the compose file against the Compose Specification schema bundled with
# check-jsonschema (offline).
docker-lint: install
	$(BIN)/hadolint docker/Dockerfile.cpu docker/Dockerfile.gpu
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml

unit: install
	PATH="$(abspath $(BIN)):$$PATH" scripts/with_postgres.sh $(BIN)/pytest

test: lint check-imports docker-lint unit

bench: install
	$(BIN)/python bench/model_speed.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
