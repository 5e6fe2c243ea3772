#!/usr/bin/env bash
# `make demo`: runs `tiffin demo` from the build. On a terminal it waits for you between the
# steps; without one (CI, `make demo </dev/null`) it runs them straight through (`--script`).
# Extra arguments go to `tiffin demo` (e.g. `make demo DEMO_ARGS=--no-tray`).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${TIFFIN_BIN:-${CARGO_TARGET_DIR:-target}/debug/tiffin}
args=()
[ -t 0 ] || args+=(--script)
exec "$bin" demo "${args[@]}" "$@"
