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

build: lib bins $(DEV_PC_DIR)/handoff.pc examples examples-go

# The commands (handoff-supervisor; see docs/systemd.md).
.PHONY: bins
bins:
	$(CARGO) build --release --bins

# The example services, built against the tree as a user's project would be
# (pkg-config, PKG_CONFIG_PATH exported above).
examples: lib $(DEV_PC_DIR)/handoff.pc
	$(MAKE) -C examples/c

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

test: deps build test-rust test-c test-crash test-python test-go test-demo

test-rust:
	$(CARGO) test --release

# The crash matrix (tests/crash_recovery.rs): the crash points exist only
# with the `crash-points` feature, built in a target directory of its own so
# the normal build never contains them. The C test services link against
# target/release (hence `build`); the test points them at the crash-enabled
# library with LD_LIBRARY_PATH.
CRASH_TARGET := $(CURDIR)/target/crash
.PHONY: test-crash
test-crash: build
	CARGO_TARGET_DIR=$(CRASH_TARGET) $(CARGO) build --release --features crash-points --example test-supervisor
	CARGO_TARGET_DIR=$(CRASH_TARGET) $(CARGO) test --release --features crash-points --test crash_recovery

test-c: build
	$(MAKE) -C tests/c test

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
	$(PY_VENV)/bin/mypy --strict bindings/python/src/handoff
	cd examples/python && $(PY_VENV)/bin/mypy --strict kv.py kvlog.py
	cd bindings/python && HANDOFF_LIBRARY=$(TARGET)/libhandoff.so $(PY_VENV)/bin/python -m pytest -q

# The Go binding (bindings/go) and the Go example (examples/go, built to
# examples/go/build/kv-go): go vet, then the suite under the race detector,
# then again with the handoff_gcstress tag (a garbage collection between
# every two C calls). Standard library only: nothing is fetched; -count=1
# because Go's test cache does not see libhandoff.so change.
GO     ?= go
GO_ENV := GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
.PHONY: examples-go test-go
examples-go: lib $(DEV_PC_DIR)/handoff.pc
	cd examples/go && $(GO_ENV) $(GO) build -o build/kv-go .

test-go: build examples-go
	cd examples/go && $(GO_ENV) $(GO) vet ./...
	cd bindings/go && $(GO_ENV) $(GO) vet ./... && $(GO_ENV) $(GO) vet -tags handoff_gcstress ./...
	cd bindings/go && $(GO_ENV) $(GO) test -race -count=1 ./...
	cd bindings/go && $(GO_ENV) $(GO) test -race -count=1 -tags handoff_gcstress ./...

# The demo: handoff-supervisor hands the key-value service off between its
# C, Python and Go implementations under load (examples/demo). test-demo runs
# a shorter demo and the nine ordered pairs of implementations.
.PHONY: demo test-demo
demo: build venv
	$(PYTHON) examples/demo/demo.py

test-demo: build venv
	$(PYTHON) examples/demo/demo.py --handoffs 3 --report $(CURDIR)/target/demo-test.svg
	$(PY_VENV)/bin/python -m pytest -q examples/demo/test_pairs.py

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
