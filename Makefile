# The one entry point for every language: `make` builds, `make test` runs
# every test, installing what it needs first.

CARGO      ?= cargo
PREFIX     ?= /usr/local
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
BINDIR     ?= $(PREFIX)/bin
VERSION    := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
TARGET     := $(CURDIR)/target/release
# A pkg-config file for using the library straight from this tree.
DEV_PC_DIR := $(CURDIR)/target/pkgconfig

export PKG_CONFIG_PATH := $(DEV_PC_DIR)$(if $(PKG_CONFIG_PATH),:$(PKG_CONFIG_PATH))

.PHONY: all build lib header deps test test-rust test-c lint install clean examples

all: build

build: lib bins $(DEV_PC_DIR)/handoff.pc examples examples-go examples-minimal

# The commands (handoff-supervisor; see docs/systemd.md).
.PHONY: bins
bins:
	$(CARGO) build --release --bins

# The example services, built against the tree as a user's project would be
# (pkg-config, PKG_CONFIG_PATH exported above).
examples: lib $(DEV_PC_DIR)/handoff.pc
	$(MAKE) -C examples/c

# The minimal service in each language (examples/minimal): C, C++ and Go
# through its Makefile (pkg-config); minimal.py runs as it is; minimal.rs is
# the crate's example minimal-rust, which `cargo test` builds (building it
# here would rebuild the library each time: examples see the dev-dependencies).
.PHONY: examples-minimal
examples-minimal: lib $(DEV_PC_DIR)/handoff.pc
	$(MAKE) -C examples/minimal

lib:
	$(CARGO) build --release --lib
	ln -sf libhandoff.so $(TARGET)/libhandoff.so.0

# Refresh the checked-in header from the Rust sources.
header:
	HANDOFF_WRITE_HEADER=1 $(CARGO) build --release --lib

$(DEV_PC_DIR)/handoff.pc: Cargo.toml Makefile
	mkdir -p $(DEV_PC_DIR)
	scripts/write-pc.sh $(CURDIR) $(TARGET) $(CURDIR)/include $(VERSION) in-tree > $@

deps:
	scripts/install-deps.sh

test: deps build test-rust test-c test-sanitize test-fuzz test-crash test-python test-go test-demo lint

# tests/limits.rs (10,000 idle connections, the descriptor limit, a short
# soak) runs the C, Python and Go example services: hence build and venv.
test-rust: build venv
	$(CARGO) test --release

# The crash matrices: tests/crash_recovery.rs (the C noop test service) and
# tests/crash_matrix_services.rs (the C, Python and Go example services under
# client load; docs/reliability.md). The crash points exist only with the
# `crash-points` feature, built in a target directory of its own so the
# normal build never contains them. The services link against target/release
# (hence `build`, and `venv` for Python); the tests point them at the
# crash-enabled library (LD_LIBRARY_PATH, HANDOFF_LIBRARY). --lib: building
# only the example would leave an old target/crash/release/libhandoff.so.
# Every crash point with each service as the incumbent (57 cases, ~45-70 s);
# CRASH_MATRIX=quick runs every point once (19).
CRASH_TARGET := $(CURDIR)/target/crash
CRASH_MATRIX ?= full
.PHONY: test-crash
test-crash: build venv
	CARGO_TARGET_DIR=$(CRASH_TARGET) $(CARGO) build --release --features crash-points --lib --example test-supervisor
	CARGO_TARGET_DIR=$(CRASH_TARGET) $(CARGO) test --release --features crash-points --test crash_recovery
	CRASH_MATRIX=$(CRASH_MATRIX) CARGO_TARGET_DIR=$(CRASH_TARGET) $(CARGO) test --release --features crash-points --test crash_matrix_services

# The soak (tests/limits.rs): handoffs back to back, C -> Python -> Go, under
# client load, for SOAK_SECS seconds (24 hours: SOAK_SECS=86400; see
# docs/reliability.md for the pace of a long run). `make test` runs 20.
SOAK_SECS ?= 180
SOAK_PACE_MS ?= 5
SOAK_READS ?= 1
.PHONY: soak
soak: build venv
	SOAK_SECS=$(SOAK_SECS) SOAK_PACE_MS=$(SOAK_PACE_MS) SOAK_READS=$(SOAK_READS) \
	    $(CARGO) test --release --test limits soak -- --nocapture

test-c: build
	$(MAKE) -C tests/c test
	$(MAKE) -C tests/cpp test
	$(MAKE) -C examples/c check

# docs/reliability.md. test-sanitize (part of `make test`): kv-c built with
# AddressSanitizer + UndefinedBehaviorSanitizer (LeakSanitizer included),
# then tests/handoff_c.rs with every generation that build (cold start,
# handoffs under load, an aborted handoff, a compacting successor,
# SIGTERM): no report, every exit
# 0; then the same under valgrind. tests/c already runs the C tests of the
# ABI both ways (test-c).
.PHONY: test-sanitize test-asan test-valgrind test-fuzz test-miri
test-sanitize: test-asan test-valgrind

test-asan: build
	$(MAKE) -C examples/c asan
	HANDOFF_C_ASAN=1 $(CARGO) test --release --test handoff_c

test-valgrind: build
	HANDOFF_C_VALGRIND=1 $(CARGO) test --release --test handoff_c

# Coverage-guided fuzzing (fuzz/, libFuzzer; scripts/fuzz.sh): FUZZ_SECS per
# target, then the Go binding's decoder. `make test` runs it for a few
# seconds on the stable toolchain; the long runs of docs/reliability.md use
# FUZZ_SANITIZER=address (nightly, AddressSanitizer).
FUZZ_SECS ?= 10
test-fuzz: build
	scripts/fuzz.sh $(FUZZ_SECS)
	cd bindings/go && $(GO_ENV) $(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZ_SECS)s

# The pure-Rust codec (frame, protocol, journal decoding, the C ABI's message
# and reader functions through the fuzz corpus) under Miri (nightly + the
# miri component). Not part of `make test`: minutes of interpretation.
MIRI_FLAGS ?= -Zmiri-disable-isolation
test-miri:
	MIRIFLAGS='$(MIRI_FLAGS)' $(CARGO) +nightly miri test --lib -- frame:: protocol:: \
	    journal::tests::a_truncated --skip encoding_refuses_a_frame_over_the_limit
	MIRIFLAGS='$(MIRI_FLAGS)' $(CARGO) +nightly miri test --test vectors --test fuzz_regressions

# The Python binding (bindings/python) and the Python example: a venv under
# target/ with the package installed as a user would (pip), ruff and mypy,
# then the pytest suite against this tree's library and examples (kv-c for
# the Python-to-C handoffs).
PYTHON  ?= python3
PY_VENV := $(CURDIR)/target/venv
.PHONY: venv test-python
venv:
	$(PYTHON) -m venv $(PY_VENV)
	$(PY_VENV)/bin/pip install -q --force-reinstall --no-deps ./bindings/python
	$(PY_VENV)/bin/pip install -q -r bindings/python/requirements-dev.txt

test-python: build venv
	$(PY_VENV)/bin/ruff check bindings/python examples/python
	$(PY_VENV)/bin/ruff format --check bindings/python examples/python
	cd examples/demo && $(PY_VENV)/bin/ruff check . && $(PY_VENV)/bin/ruff format --check .
	cd examples/demo && $(PY_VENV)/bin/mypy --strict demo.py loadgen.py report.py test_pairs.py test_report.py
	$(PY_VENV)/bin/mypy --strict bindings/python/src/handoff
	cd examples/python && $(PY_VENV)/bin/mypy --strict kv.py kvlog.py test_kvlog.py
	cd examples/minimal && $(PY_VENV)/bin/ruff check minimal.py && $(PY_VENV)/bin/ruff format --check minimal.py
	cd examples/minimal && $(PY_VENV)/bin/mypy --strict minimal.py
	$(PY_VENV)/bin/python -m pytest -q examples/python/test_kvlog.py
	cd bindings/python && HANDOFF_LIBRARY=$(TARGET)/libhandoff.so $(PY_VENV)/bin/python -m pytest -q

# The Go binding (bindings/go) and the Go example (examples/go, built to
# examples/go/build/kv-go): go vet, then the suite under the race detector,
# then again with the handoff_gcstress tag (a garbage collection between
# every two C calls). Standard library only: nothing is fetched; -count=1
# because Go's test cache does not see libhandoff.so change. Then the
# benchmark's tableflip service's log replay test (tableflip itself comes
# from the Go module proxy, benches/tableflip/go.sum).
GO     ?= go
GO_ENV := GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
TABLEFLIP_ENV := GOTOOLCHAIN=local GOFLAGS="-mod=mod -buildvcs=false"
.PHONY: examples-go test-go
examples-go: lib $(DEV_PC_DIR)/handoff.pc
	cd examples/go && $(GO_ENV) $(GO) build -o build/kv-go .

test-go: build examples-go
	cd examples/go && $(GO_ENV) $(GO) vet ./... && $(GO_ENV) $(GO) test -count=1 ./...
	cd examples/minimal/go && $(GO_ENV) $(GO) vet ./...
	cd bindings/go && $(GO_ENV) $(GO) vet ./... && $(GO_ENV) $(GO) vet -tags handoff_gcstress ./...
	cd bindings/go && $(GO_ENV) $(GO) test -race -count=1 ./...
	cd bindings/go && $(GO_ENV) $(GO) test -race -count=1 -tags handoff_gcstress ./...
	cd benches/tableflip && $(TABLEFLIP_ENV) $(GO) vet ./... && $(TABLEFLIP_ENV) $(GO) test -count=1 ./...

# The demo: handoff-supervisor hands the key-value service off between its
# C, Python and Go implementations under load (examples/demo). test-demo runs
# a shorter demo, the report's verdict on made-up runs (test_report.py) and
# the nine ordered pairs of implementations.
.PHONY: demo test-demo
demo: build venv
	$(PYTHON) examples/demo/demo.py

test-demo: build venv
	$(PYTHON) examples/demo/demo.py --handoffs 3 --report $(CURDIR)/target/demo-test.svg
	$(PY_VENV)/bin/python -m pytest -q examples/demo/test_report.py examples/demo/test_pairs.py

# The comparison of handoff libraries under load (benches/compare, written
# up in docs/benchmarks.md): libhandoff (kv-c, kv-go), beyond-handoff 0.1.4,
# cloudflare/tableflip v1.2.3 and a plain restart, one after the other, same
# service, same load. `make bench` is a quick run (results in target/bench/);
# the published one is
#   make bench BENCH_ARGS="--handoffs 1000 --publish"
# tableflip comes from the Go module proxy (benches/tableflip/go.sum). Never
# part of `make test`: benchmarks assert nothing.
BENCH_ARGS ?=
.PHONY: bench bench-programs
bench-programs: build examples-go
	$(CARGO) build --release --example bench-beyond-kv --example bench-beyond-supervisor
	cd benches/tableflip && $(TABLEFLIP_ENV) $(GO) vet ./...
	cd benches/tableflip && $(TABLEFLIP_ENV) $(GO) build -o $(CURDIR)/target/bench/tableflip-kv .

bench: bench-programs
	$(CARGO) bench --bench compare -- $(BENCH_ARGS)

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets -- -D warnings

install: build
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(BINDIR)
	install -m 0755 $(TARGET)/handoff-supervisor $(DESTDIR)$(BINDIR)/handoff-supervisor
	install -m 0755 $(TARGET)/libhandoff.so $(DESTDIR)$(LIBDIR)/libhandoff.so.$(VERSION)
	ln -sf libhandoff.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libhandoff.so.0
	ln -sf libhandoff.so.0 $(DESTDIR)$(LIBDIR)/libhandoff.so
	install -m 0644 $(TARGET)/libhandoff.a $(DESTDIR)$(LIBDIR)/libhandoff.a
	install -m 0644 include/handoff.h $(DESTDIR)$(INCLUDEDIR)/handoff.h
	scripts/write-pc.sh $(PREFIX) $(LIBDIR) $(INCLUDEDIR) $(VERSION) > $(DESTDIR)$(LIBDIR)/pkgconfig/handoff.pc

clean:
	$(CARGO) clean
	$(MAKE) -C tests/c clean
	$(MAKE) -C examples/c clean
	$(MAKE) -C examples/minimal clean
