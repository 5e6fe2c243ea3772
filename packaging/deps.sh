#!/usr/bin/env bash
# Installs the system packages tiffin needs to build, test and demo, on Debian/Ubuntu.
# Usage: packaging/deps.sh [build|test|demo]   (default: test)
# Elsewhere it only says what is missing. On NixOS use `nix develop` (packaging/flake.nix).
# systemd: for `systemd-analyze verify` of packaging/systemd (works without systemd as PID 1).
set -euo pipefail
what=${1:-test}

build_pkgs=(pkg-config libssl-dev libgtk-3-dev libayatana-appindicator3-dev libxdo-dev)
test_pkgs=(openssh-server openssh-client rsync xvfb dbus dbus-x11 nix-bin desktop-file-utils systemd
           libglib2.0-bin x11-apps imagemagick iproute2 procps passwd python3 python3-dbus python3-gi
           faketime)
case "$what" in
  build) pkgs=("${build_pkgs[@]}") ;;
  test|demo) pkgs=("${build_pkgs[@]}" "${test_pkgs[@]}") ;;
  *) echo "usage: $0 [build|test|demo]" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "tiffin: missing system packages: ${missing[*]}" >&2
  echo "tiffin: this is not Debian/Ubuntu; on NixOS run 'nix develop' in packaging/, elsewhere install the equivalents." >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "tiffin: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
