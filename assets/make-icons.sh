#!/usr/bin/env bash
# Renders the tray icons' SVG sources (assets/icons/*.svg) to the PNGs embedded in tiffin-tray
# and installed into the hicolor theme. Needs rsvg-convert (librsvg2-bin). Run after editing an SVG.
set -euo pipefail
cd "$(dirname "$0")/icons"
for size in 16 22 32 48; do
  mkdir -p "$size"
  for svg in *.svg; do
    rsvg-convert -w "$size" -h "$size" "$svg" -o "$size/${svg%.svg}.png"
  done
done
