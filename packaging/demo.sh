#!/usr/bin/env bash
# Placeholder for `make demo` until `tiffin demo` exists: shows the command tree and the
# manifest core at work on a small fleet-shaped tree.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/tiffin
"$bin" --help
