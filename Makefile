# groupd: `make test` (needs root: it builds network namespaces), `make demo`, `make bench`.
SHELL := /bin/bash
CARGO ?= cargo
# etcd-server: the etcd source's tests start real etcd members; protobuf-compiler:
# the etcd client crate generates its gRPC code with protoc at build time.
APT_PACKAGES := nftables iproute2 iputils-ping procps openssl systemd binutils man-db util-linux etcd-server protobuf-compiler
BENCH_PACKAGES := sockperf iperf3

.PHONY: all build deps bench-deps deb-deps assets test chaos lint demo demo-marathon bench deb clean

all: build

build:
	$(CARGO) build --release --workspace --bins

# Install what the tests need when it is missing (a fresh CI machine has none of it).
deps:
	@missing=""; \
	for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

bench-deps: deps
	@missing=""; \
	for p in $(BENCH_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

# Every test runs, including the network-namespace suite (root required): the
# tests that need root are #[ignore = "needs root: …"] so a plain `cargo test`
# works for anyone; --include-ignored runs them here.
test: deps
	@if [ "$$(id -u)" != 0 ]; then echo "make test needs root (it creates network namespaces); run: sudo make test" >&2; exit 1; fi
	$(CARGO) build --workspace --bins --benches
	$(CARGO) test --workspace --lib --bins --tests -- --include-ignored --skip chaos_ --test-threads=4
	$(CARGO) test --workspace --doc

# The chaos suite (minutes; not part of `make test`): faults under continuous
# probing of every pair. GROUPD_CHAOS_SEED=N replays a run.
chaos: deps
	@if [ "$$(id -u)" != 0 ]; then echo "make chaos needs root"; exit 1; fi
	$(CARGO) test --test chaos -- --ignored --nocapture --test-threads=1

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# MODE=file (default) or MODE=marathon (against the simulated Marathon).
demo: deps
	@if [ "$$(id -u)" != 0 ]; then echo "make demo needs root"; exit 1; fi
	./demo/demo.sh $(or $(MODE),file)

demo-marathon:
	$(MAKE) demo MODE=marathon

bench: bench-deps
	@if [ "$$(id -u)" != 0 ]; then echo "make bench needs root"; exit 1; fi
	$(CARGO) build --release --workspace --bins --benches
	./benches/run.sh

# cargo-deb (crates.io only) when it is missing: a few minutes, once.
deb-deps:
	@$(CARGO) deb --version >/dev/null 2>&1 || $(CARGO) install cargo-deb --locked

# Man pages and bash/zsh/fish completions, rendered by the release binaries
# from their own clap definitions (src/cli_assets.rs) into target/assets.
assets: build
	rm -rf target/assets
	GROUPD_RENDER_ASSETS=target/assets target/release/groupd
	GROUPD_RENDER_ASSETS=target/assets target/release/groupctl

# target/debian/groupd_<version>-1_<arch>.deb and the debug symbols'
# groupd-dbgsym_<version>-1_<arch>.ddeb ([package.metadata.deb] in
# Cargo.toml); cargo-deb prints their paths. md5sums are added afterwards
# (cargo-deb writes none).
deb: deb-deps assets
	@rm -f target/debian/*.deb target/debian/*.ddeb
	$(CARGO) deb --no-build
	./packaging/add-md5sums.sh target/debian/groupd_*.deb

clean:
	$(CARGO) clean
