# Switchyard. `make demo` and `make test` are all a new machine needs: both
# install missing system packages, build, and run.

SHELL := /bin/bash
CARGO ?= cargo
RELEASE := target/release

# What the build and the tests need from Debian (see the README and
# docs/operations.md): clang/llvm/libbpf for the XDP program,
# libelf/zlib/m4/pkg-config for libxdp (built from source by xsk-rs),
# iproute2 for the namespace tests; curl and nginx (with its stream
# module) as the PROXY protocol client and backends of vm-tests; BIRD for
# the BGP tests; qemu-system-x86 boots the guest LB node of vm-tests/vm/
# (its kernel and busybox are downloaded, pinned, not installed).
APT_PACKAGES := clang llvm libbpf-dev libelf-dev zlib1g-dev pkg-config m4 make gcc libc6-dev iproute2 iputils-ping curl nginx libnginx-mod-stream bird2 qemu-system-x86
# `make bench` also measures kube-proxy-style nftables DNAT.
BENCH_PACKAGES := nftables

.PHONY: deps bench-deps install-missing build demo test lint bench bench-vm bench-memory bench-health docs fuzz fuzz-targets fuzz-props soak soak-rounds clean bench-compare

deps:
	@$(MAKE) --no-print-directory install-missing PACKAGES="$(APT_PACKAGES)"
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install a Rust toolchain (rustup) first"; exit 1; }

bench-deps: deps
	@$(MAKE) --no-print-directory install-missing PACKAGES="$(BENCH_PACKAGES)"

install-missing:
	@missing=""; \
	for p in $(PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

build: deps
	$(CARGO) build --release --workspace --bins

demo: build
	$(RELEASE)/yard-demo --switchyard $(RELEASE)/switchyard --yardctl $(RELEASE)/yardctl --config config/examples/demo.yaml

# Clippy in the release profile: it shares build scripts (the XDP program's
# compile among them) and proc macros with `make build`.
lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings
	$(CARGO) xtask arch

# Unit tests and end-to-end tests share the release build the e2e tests run.
test: build lint
	set -o pipefail; $(CARGO) test --release --workspace -- --test-threads 2 2>&1 | tee target/test.log
	@awk '/^test result:/ { passed += $$4; failed += $$6 } END { printf "%d passed, %d failed\n", passed, failed }' target/test.log

# Every path and its baseline in one run (namespaces, live-frames
# generator, nftables, Switchyard with the fast path off and on), then the
# worker, Maglev and flow-table benchmarks; writes perf/results/latest.json
# and latest.svg, and rewrites the generated block of docs/performance.md.
bench: bench-deps build
	$(RELEASE)/yard-netbench

# make bench's paths with the LB node a qemu guest on virtio-net (one NIC:
# no redirect paths); writes perf/results/vm-latest.json. Under software
# emulation (TCG) the rates measure the emulator and it says so
# (docs/performance.md, "In virtual machines"). Options go in ARGS, e.g.
# make bench-vm ARGS="--gen-cpu 0 --vcpu-cpus 2-5 --vcpus 2 --queues 2".
bench-vm: bench-deps build
	$(RELEASE)/yard-vmbench $(ARGS)

# Resident memory per listener of the daemon's snapshots at 10, 1,000 and
# 4,096 listeners, against compact tables measured in the same run
# (docs/performance.md, "Memory per listener").
bench-memory: deps
	$(CARGO) build --release -p switchyard-perf --bin yard-memory
	$(RELEASE)/yard-memory

# The CPU and probe latency of active health checks at 1,000 and 10,000
# TCP endpoints, against an idle daemon measured in the same run
# (docs/performance.md, "Active health checks"); writes
# perf/results/health.json.
bench-health: build
	$(RELEASE)/yard-health

# Re-renders the generated block of docs/performance.md from the existing
# perf/results/latest.json, measuring nothing (`cargo test -p
# switchyard-perf` fails until the two agree).
docs: deps
	$(CARGO) run --release -q -p switchyard-perf --bin yard-netbench -- --render-docs

# The per-packet benchmark (yard-bench) of this tree against another
# revision, alternating in one run: make bench-compare BASE=<rev> [ROUNDS=7].
ROUNDS ?= 7
bench-compare: deps
	@test -n "$(BASE)" || { echo "usage: make bench-compare BASE=<rev> [ROUNDS=7]"; exit 2; }
	perf/compare-yard-bench $(BASE) $(ROUNDS)

# Coverage-guided fuzzing (libFuzzer, on the stable toolchain): each target
# of fuzz/ runs FUZZ_SECONDS (default 60) from its seeds and from what
# earlier runs kept in target/fuzz/corpus, and the executions and coverage
# of each are printed; then the property tests run with many more cases
# than `make test` runs. The instrumented binaries have their own target
# dir; the flags are the ones cargo-fuzz passes when no sanitizer is asked
# for, with debug assertions and overflow checks on.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= packet checksum config control netlink
FUZZ_TRIPLE := $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')
FUZZ_RUSTFLAGS := -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
	-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
	-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks
FUZZ_PACKAGES := g++

fuzz: fuzz-targets fuzz-props

fuzz-targets: deps
	@$(MAKE) --no-print-directory install-missing PACKAGES="$(FUZZ_PACKAGES)"
	$(CARGO) build --release -p switchyard-fuzz --bin yard-fuzz-seed
	RUSTFLAGS="$(FUZZ_RUSTFLAGS)" $(CARGO) build --release -p switchyard-fuzz --features libfuzzer \
	  $(foreach t,$(FUZZ_TARGETS),--bin fuzz-$(t)) --target $(FUZZ_TRIPLE) --target-dir target/fuzz
	fuzz/run-targets target/fuzz/$(FUZZ_TRIPLE)/release $(RELEASE)/yard-fuzz-seed \
	  $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# Property tests of everything that reads packet bytes or config input, with
# many more cases than `make test` runs.
fuzz-props: deps
	PROPTEST_CASES=200000 $(CARGO) test --release -p switchyard-wire -- --test-threads 2
	PROPTEST_CASES=200000 $(CARGO) test --release -p switchyard-dataplane --lib -- --test-threads 2 packet::
	PROPTEST_CASES=200000 $(CARGO) test --release -p switchyard-daemon --lib -- --test-threads 2 neighbor::netlink::
	PROPTEST_CASES=20000 $(CARGO) test --release -p switchyard-config --test never_panics

# The soak: mixed TCP and UDP traffic through the VIP for SOAK_SECONDS
# (default 600) while backends are removed, added, drained and undrained,
# the config is rewritten (valid, invalid, truncated, empty) and yardctl is
# asked everything; fails on a crash, a reset connection to a backend that
# stayed, a bad file applied, or the daemon's memory or descriptors growing
# past their bounds (vm-tests/tests/soak.rs says which and why).
SOAK_SECONDS ?= 600
soak: build
	set -o pipefail; SOAK_SECONDS=$(SOAK_SECONDS) $(CARGO) test --release -p switchyard-vm-tests \
	  --test soak -- --ignored --nocapture --test-threads 1 2>&1 | tee target/soak.log

# The end-to-end suites that run traffic through reloads, drains and the
# fast path, over and over (SOAK_ROUNDS, default 10): for the rare failure
# one `make test` would not show.
SOAK_ROUNDS ?= 10
soak-rounds: build
	set -e; for round in $$(seq 1 $(SOAK_ROUNDS)); do \
	  echo "== soak round $$round of $(SOAK_ROUNDS)"; \
	  $(CARGO) test --release -p switchyard-vm-tests --test reload --test fast_path --test weights --test e2e -- --test-threads 2; \
	done

clean:
	$(CARGO) clean
