# tiffin — the two commands of the README, and the checks CI runs.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: all deps build test lint unit demo bench headless-check screenshots

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
# agent_idle, tray_idle) print their own tables.
bench: deps
	$(CARGO) bench --bench suite

# The tray's menu in a real panel (trayer under Xvfb), one PNG per state, for the README.
screenshots: deps
	$(CARGO) test --test tray_screenshots -- --ignored --nocapture
