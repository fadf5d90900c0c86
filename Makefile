# Everything a developer or CI needs, installing what it needs itself.
# `make demo` and `make test` work on a fresh machine with only Rust, Python 3.11 and Node 20.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
CARGO ?= cargo

.PHONY: all build demo test test-unit lint fmt clippy layer bench soak fuzz clean venv node-deps browser

all: build

build:
	$(CARGO) build -p xray-extension -p xray-extension-tests -p xray-extension-bench --bins

venv: $(VENV_STAMP)

$(VENV_STAMP): tests/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r tests/requirements.txt
	touch $@

NODE_FUNCTION := tests/functions/node
NODE_STAMP := $(NODE_FUNCTION)/node_modules/.installed

node-deps: $(NODE_STAMP)

$(NODE_STAMP): $(NODE_FUNCTION)/package.json $(NODE_FUNCTION)/package-lock.json
	cd $(NODE_FUNCTION) && npm ci --silent --no-audit --no-fund
	touch $@

## browser: headless Chromium (Debian package) for the test that renders the demo's timeline.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium)

## demo: a local Lambda (emulator + embedded X-Ray sink) runs a sample function through a cold
## start, warm invocations, an error and a shutdown, then prints the traces and writes them as a
## timeline to one HTML file (its path is the last line).
demo: build
	$(CARGO) run --quiet -p xray-extension-bench --bin demo

## test: unit tests, then end-to-end tests through the emulator and against real peers.
test: venv node-deps browser build
	XRAY_TEST_VENV=$(abspath $(VENV)) $(CARGO) test --workspace -- --test-threads=2

test-unit:
	$(CARGO) test -p xray-extension --lib

lint: fmt clippy

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## layer: static musl binaries for x86_64 and arm64, one zip per architecture.
layer:
	$(MAKE) -C layer all

clean:
	$(CARGO) clean
	rm -rf $(VENV) build

## fuzz: each cargo-fuzz target in extension/fuzz for FUZZ_SECONDS, on the stable toolchain
## (libFuzzer with coverage instrumentation, no sanitizer); fails when any target crashes.
## fuzz-ci: the same, FUZZ_CI_SECONDS each. Corpora: extension/fuzz/corpus (seeded from fixtures).
FUZZ_SECONDS ?= 60
FUZZ_CI_SECONDS ?= 12

.PHONY: fuzz-ci fuzz-tools

fuzz-tools:
	@$(CARGO) fuzz --version >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked

fuzz: fuzz-tools
	CARGO=$(CARGO) extension/fuzz/run.sh $(FUZZ_SECONDS)

fuzz-ci: fuzz-tools
	CARGO=$(CARGO) extension/fuzz/run.sh $(FUZZ_CI_SECONDS)

## bench: release binaries (ours and the empty-extension baseline), the criterion micro-benchmarks,
## then every performance figure through the emulator, printed as one table with the machine it
## ran on and written to bench/RESULTS.md. One row, fast: make bench BENCH_ARGS="--only init"
## (sections: init, post-runtime, load, otel, memory, size, micro, scale; --quick for fewer repetitions).
## scale-model: the simulation of many environments against one account quota, alone.
BENCH_ARGS ?=

## soak: a long life of the layer's static musl binary through the emulator: 10,000 invocations
## back to back (10 subsegments each), then SHUTDOWN; fails when a document is lost or RSS grows
## more than 1 MiB from the 1,000th invocation to the last (bench/src/bin/soak.rs).
.PHONY: soak

soak:
	$(MAKE) -C layer binary-x86_64
	$(CARGO) build -p xray-extension-tests --bin sample-function
	$(CARGO) run --quiet -p xray-extension-bench --bin soak

.PHONY: bench-build bench-micro scale-model

bench-build:
	$(CARGO) build --release -p xray-extension -p xray-extension-tests -p xray-extension-bench --bins

bench-micro:
	$(CARGO) bench -p xray-extension --bench micro

# The init and load rows run what users deploy: the layer's static musl binary, against the
# empty extension built the same way.
bench: bench-build bench-micro
	$(MAKE) -C layer binary-x86_64 baseline-x86_64
	$(CARGO) run --release --quiet -p xray-extension-bench --bin bench -- $(BENCH_ARGS)

scale-model:
	$(CARGO) run --release --quiet -p xray-extension-bench --bin scale-model
