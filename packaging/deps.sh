#!/usr/bin/env bash
# Installs the system packages tiffin needs to build, test and demo, on Debian/Ubuntu.
# Usage: packaging/deps.sh [build|test|demo]   (default: test)
# Elsewhere it only says what is missing. On NixOS use `nix develop` (packaging/flake.nix).
# trayer, xdotool: the tray's screenshots (an XEmbed panel under Xvfb; clicks that open the menu).
# systemd: for `systemd-analyze verify` of packaging/systemd (works without systemd as PID 1).
set -euo pipefail
what=${1:-test}

build_pkgs=(build-essential pkg-config libssl-dev libgtk-3-dev libayatana-appindicator3-dev libxdo-dev)
test_pkgs=(openssh-server openssh-client rsync xvfb dbus dbus-x11 nix-bin desktop-file-utils systemd
           libglib2.0-bin x11-apps imagemagick iproute2 procps passwd python3 python3-dbus python3-gi
           trayer xdotool faketime tzdata)
test_pkgs+=(restic)  # backups are made by real restic, through the real sshd chroot
test_pkgs+=(python3-dbusmock)  # UPower/NetworkManager/logind mocks on a private system bus
test_pkgs+=(python3-prometheus-client)  # the metrics tests parse /metrics with a real Prometheus text-format parser
test_pkgs+=(nginx-light openssl)  # the http(s):// source is tested against a real nginx, its certificates made by the openssl CLI
test_pkgs+=(python3-pip)  # installs moto[server], the S3-compatible server of the object storage tests
# The demo needs only the build: its simulated NixOS is POSIX sh and coreutils.
case "$what" in
  build|demo) pkgs=("${build_pkgs[@]}") ;;
  test) pkgs=("${build_pkgs[@]}" "${test_pkgs[@]}") ;;
  *) echo "usage: $0 [build|test|demo]" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
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
fi

# `fleet publish --to s3://…` is tested against moto's S3-compatible server (PyPI `moto[server]`;
# Debian has no package of it). Installed only when missing, so a run on a ready machine is fast.
if [ "$what" = test ] && ! command -v moto_server >/dev/null 2>&1; then
  echo "tiffin: installing moto[server] (pip)" >&2
  python3 -m pip install --quiet 'moto[server]' 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages 'moto[server]' \
    || { echo "tiffin: cannot install moto[server] with pip (python3 -m pip)" >&2; exit 1; }
fi

# Rust comes from rustup: Debian's and Ubuntu's rustc packages are older than Cargo.toml's
# rust-version.
rust_hint() {
  echo "tiffin: needs Rust >= $1 (cargo and rustc); install it with rustup (https://rustup.rs):" >&2
  echo "    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh" >&2
  exit 1
}
need_rust=$(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' "$(dirname "$0")/../Cargo.toml")
if ! command -v cargo >/dev/null 2>&1 || ! command -v rustc >/dev/null 2>&1; then
  rust_hint "$need_rust"
fi
have_rust=$(rustc --version | awk '{print $2}')
if [ "$(printf '%s\n%s\n' "$need_rust" "$have_rust" | sort -V | head -n1)" != "$need_rust" ]; then
  echo "tiffin: rustc $have_rust is too old" >&2
  rust_hint "$need_rust"
fi
