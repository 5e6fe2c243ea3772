# tiffin — the two commands of the README, and the checks CI runs.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: all deps build test lint unit demo bench headless-check screenshots fuzz

all: build

deps:
	@packaging/deps.sh test

build: deps
	$(CARGO) build --release

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# The headless build must not pull in GTK: a server has no GTK development packages.
headless-check:
	@if $(CARGO) tree --no-default-features -e normal,build --prefix none | grep -Eq '^(gtk|gdk|tao|tray-icon|libappindicator)'; then \
		echo "tiffin: the headless build depends on GTK:" >&2; \
		$(CARGO) tree --no-default-features -e normal,build -i gtk-sys >&2; exit 1; fi
	$(CARGO) build --no-default-features --bins
	@echo "headless build: no GTK dependency"

test: lint headless-check
	$(CARGO) test --lib --bins --tests -- --test-threads=2

# A debug build: it compiles sooner than a release build, and `make test` reuses it.
demo:
	@packaging/deps.sh demo
	$(CARGO) build --bins
	packaging/demo.sh $(DEMO_ARGS)

# One table, tiffin beside what a user would otherwise run, written to bench/results.md
# (release build; root, sshd, rsync; the tray rows need Xvfb and D-Bus). The single benches
# (`cargo bench --bench NAME`: manifest, fetch, pipeline, fleet_status, publish, server_load,
# serve_checks, agent_idle, tray_idle) print their own tables.
bench: deps
	$(CARGO) bench --bench suite

# The tray's menu in a real panel (trayer under Xvfb), one PNG per state, for the README.
screenshots: deps
	$(CARGO) test --test it tray_screenshots -- --ignored --nocapture

# Long fuzzing runs, outside `make test` (which replays the committed corpora through
# tests/it/fuzz_corpus.rs). Needs nightly and `cargo install cargo-fuzz`. Each target runs
# FUZZ_SECONDS, seeded from fuzz/corpus/<target>/; what it finds new goes to fuzz/found/<target>/
# (not committed), a crash to fuzz/artifacts/<target>/ and stops the run.
FUZZ_SECONDS ?= 300
FUZZ_TARGETS ?= manifest fleet_toml agent_toml socket_request report http_host
FUZZ_CARGO ?= cargo +nightly

fuzz:
	@command -v cargo-fuzz >/dev/null || { echo "make fuzz: needs cargo-fuzz (cargo install cargo-fuzz)" >&2; exit 1; }
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/found/$$t && \
		echo "fuzz: $$t for $(FUZZ_SECONDS) s" && \
		$(FUZZ_CARGO) fuzz run --debug-assertions $$t fuzz/found/$$t fuzz/corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 || exit 1; \
	done
