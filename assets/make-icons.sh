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

# A contact sheet for the README: every state at 48, 22 and 16 px on a light and a dark panel.
cd ..
sheet=()
for size in 48 22 16; do
  for bg in '#f2f2f2' '#2b2b2b'; do
    row="/tmp/tiffin-icons-$size-${bg#\#}.png"
    convert -background "$bg" icons/$size/tiffin-{up-to-date,update-available,updating,failed,rolled-back,reboot-needed,server-unreachable,agent-unreachable}.png \
      -bordercolor "$bg" -border 4 +append "$row"
    sheet+=("$row")
  done
done
mkdir -p screenshots
convert -background '#f2f2f2' -gravity west "${sheet[@]}" -append screenshots/icons.png
rm -f "${sheet[@]}"
