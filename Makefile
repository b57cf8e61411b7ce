# fleetpatch: the two commands are `make demo` (watch a full patch run on a simulated fleet)
# and `make test` (every test: unit, handler, simulator, fidelity, end to end).
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c

VENV        ?= $(CURDIR)/.venv
VENV_INFRA  ?= $(CURDIR)/.local/venv-infra
PY          := $(VENV)/bin/python
PIP         := $(VENV)/bin/pip
export PATH := $(VENV)/bin:$(PATH)

.PHONY: help venv build test test-rust test-static test-fidelity test-e2e lint lint-rust lint-deny lint-infra demo up down bench bench-scale clean-local

help:
	@echo "make demo       run a full patch run on the simulated fleet and print the report"
	@echo "make test       run every test (unit, handler, simulator, fidelity, end to end)"
	@echo "make lint       rustfmt, clippy (warnings denied), cargo-deny, cfn-lint, checkov, ASL validation"
	@echo "make up / down  keep the local stack running for exploration / stop it"
	@echo "make bench      print planning and dispatch-decision figures, and each function's cold start"
	@echo "make bench-scale  one run over 1k/10k/100k instances on a held simulated clock (SIZE=, MODE=, COMPARE=1)"

# The project-local virtualenv: moto, cargo-lambda, boto3, pytest (pinned).
$(VENV)/.installed: tests/requirements.txt tests/fleetsim/fidelity/requirements.txt
	python3 -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check -r tests/requirements.txt -r tests/fleetsim/fidelity/requirements.txt
	touch $@

venv: $(VENV)/.installed

# Each package on its own, the functions first and alone: `cargo lambda watch` runs
# `cargo run --package fleetpatch-functions`, and a build that also selects fleetsim or the CLI
# unifies other features into shared dependencies (tokio's `signal`, hyper's `server`,
# serde_core's `default`), which made cargo lambda compile the whole tree a second time,
# silently. Built this way, its `cargo run` finds everything up to date.
build:
	cargo build -p fleetpatch-functions --bins
	cargo build -p fleetsim
	cargo build -p fleetpatch-cli

test: test-rust test-static test-fidelity test-e2e

test-rust:
	cargo test --workspace

# Python tests that need no stack: the run input's JSON Schema against the table of cases the
# Rust validation also reads; the template's delayed start (one run a month); the local
# stack's fixes to moto's DynamoDB and its virtual clock; the scale benchmark's arithmetic.
test-static: venv
	$(PY) -m pytest -q -p no:cacheprovider tests/schema tests/infra tests/localstack tests/bench

test-fidelity: venv
	cargo build -p fleetsim
	$(PY) -m pytest -q -p no:cacheprovider tests/fleetsim/fidelity

test-e2e: venv build
	$(PY) -m pytest -q -p no:cacheprovider tests/e2e

lint: lint-rust lint-deny lint-infra

lint-rust:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

# The dependency tree against deny.toml: accepted licences, banned versions, crates.io only.
# Needs no network. cargo-deny is not a Cargo dependency: install it once (.ci/run pins the
# same version). The advisories check (`cargo deny check advisories`) fetches the RustSec
# database, so it is not part of lint.
CARGO_DENY_VERSION := 0.20.2
lint-deny:
	@cargo deny --version >/dev/null 2>&1 || { \
	  echo "cargo-deny is missing: install it with 'cargo install --locked cargo-deny@$(CARGO_DENY_VERSION)'" >&2; \
	  exit 1; }
	cargo deny --locked check --hide-inclusion-graph licenses bans sources

lint-infra:
	bash infra/lint.sh $(VENV_INFRA)

# The virtualenv (pip, from its cache) is made while cargo builds, not before it: a cold
# `make demo` is one cold build plus the demo itself (README: Running the demo).
demo:
	$(MAKE) --no-print-directory -j2 venv build
	$(PY) tests/demo/demo.py

up: venv build
	$(PY) tests/localstack/stack.py up

down:
	$(PY) tests/localstack/stack.py down

# Prints figures, asserts nothing: planning and dispatch decisions, the poll simulation, then
# each function's cold start (release build, a local Runtime API: process start to first
# /next, and peak RSS), then its peak RSS handling a 10,000-instance location (local stack).
bench: venv
	cargo run -q --release -p fleetpatch --example bench
	cargo build -q --release -p fleetpatch-functions --bins
	$(PY) tests/bench/init.py
	cargo build -q -p fleetsim
	$(PY) tests/bench/rss.py

# issue 8's scale benchmark: prints figures, asserts nothing, and is too long for `make test`
# or .ci/run. SIZE=1k|10k|100k (default 100k); MODE=sfn|direct|auto (auto: the real state
# machine up to 10k, DIRECT's in-process driver above); COMPARE=1 runs 10k both ways.
SIZE ?= 100k
MODE ?= auto
bench-scale: venv
	$(PY) tests/bench/scale.py --size $(SIZE) --mode $(MODE) $(if $(filter 1,$(COMPARE)),--compare,) $(if $(filter debug,$(DRIVER)),--debug-driver,)

clean-local:
	rm -rf .local
