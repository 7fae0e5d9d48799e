# Podium task runner. `make up` and `make test` create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.podium-installed

.PHONY: up test lint fmt bench bench-refund bench-gate bench-routing eval histories venv clean

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

# Podium vs a bare workflow running the same activities, like for like, in one run: production
# configuration (encryption, policy file, audit, decision tokens), interleaved rounds; prints one
# table and writes results/bench.json (about 10 minutes on 2 cores). Bigger runs:
# make bench ARGS="--n 100 --rounds 5 --parked 3000 --sample 100" (see bench/README.md).
bench: $(STAMP)
	$(BIN)/python -m bench.compare --out results/bench.json $(ARGS)

# Priorities under overload: routine cases flood the rate-limited models' queue while urgent
# ones arrive; their latency with the priority policy and without (FIFO), same run. Writes
# results/priority.json (about 8 minutes on 2 cores).
.PHONY: bench-priority
bench-priority: $(STAMP)
	$(BIN)/python -m bench.priority --rounds 2 --out results/priority.json $(ARGS)

# The older refund benchmark: no-op activities as the baseline, everything in one process.
bench-refund: $(STAMP)
	$(BIN)/python -m bench.refund $(ARGS)

# N cases parked at the approval gate (default 5000) vs a bare Temporal wait: worker memory per
# parked case, decision -> completion latency. Writes results/bench-gate.json.
bench-gate: $(STAMP)
	$(BIN)/python -m bench.gate --out results/bench-gate.json $(ARGS)

# Routing tables side by side (cheap chain, premium only, embedded only) on the held-out
# intents; the LLMs are simulated on loopback. Writes results/bench-routing.json.
bench-routing: $(STAMP)
	$(BIN)/python -m bench.routing --out results/bench-routing.json $(ARGS)

# The chaos battery (bench/chaos) against a `podium up` of its own, loopback only: Temporal and
# worker kills, duplicate and racing decisions, hostile requests (schemathesis), auth probes,
# canary personal data, a locked database. Writes results/chaos.json; exits 1 when anything is
# lost or duplicated or a 5xx was answered. `make chaos ARGS=--quick`: the small CI profile.
.PHONY: chaos
chaos: $(STAMP)
	$(BIN)/python -m bench.chaos $(ARGS)

# Held-out intent evaluation through the default routing table; writes results/eval-intent.json.
eval: $(STAMP)
	$(BIN)/podium eval --task intent --out results/eval-intent.json $(ARGS)

# Re-record the committed workflow histories (only for a deliberate, versioned change).
histories: $(STAMP)
	$(BIN)/python -m tests.record_histories

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
