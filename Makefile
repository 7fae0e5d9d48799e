# Podium task runner. `make up` and `make test` create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.podium-installed

.PHONY: up test lint fmt bench histories venv clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing Podium into $(VENV) (first run takes a minute)..."
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

up: $(STAMP)
	$(BIN)/podium up

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy core activities workflows starter worker.py

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python -m bench.refund $(ARGS)

# Re-record the committed workflow histories (only for a deliberate, versioned change).
histories: $(STAMP)
	$(BIN)/python -m tests.record_histories

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
