#!/bin/sh
# `<system>/bin/switch-to-configuration test|boot|switch` of the NixOS stand-in. The system is a
# real store path; what it switches is a sandbox root, $TIFFIN_STANDIN_ROOT (the environment of
# whoever runs it: a store path must not name one test's directory):
#   run/current-system      link to the running system (`test`, `switch`)
#   profiles/system         the system profile (real `nix-env -p … --set` generations)
#   boot-default            the profile's system, set by `boot` (as a bootloader install would)
#   publication             optional: the path of the host's publication (standin.cutNetwork)
#   cut-sshd-hook           optional: run as `HOOK cut` for a cutSshd system, `HOOK restore` else
#   calls.log               one line per run
set -eu
trap '' PIPE
ROOT=${TIFFIN_STANDIN_ROOT:?TIFFIN_STANDIN_ROOT is not set: the stand-in switches nothing without its sandbox root}
sys=$(cd "$(dirname "$0")/.." && pwd -P)
action=${1:-}
printf 'switch-to-configuration %s %s\n' "$action" "$sys" >> "$ROOT/calls.log"

set_link() {
    tmp="$2.tmp.$$"
    rm -f "$tmp"
    ln -s "$1" "$tmp"
    mv -fT "$tmp" "$2"
}

activate() {
    echo "activating the configuration..."
    if [ -f "$sys/standin/activateSleep" ]; then sleep "$(cat "$sys/standin/activateSleep")"; fi
    if [ -f "$ROOT/publication" ]; then
        pub=$(cat "$ROOT/publication")
        if [ -e "$sys/standin/cutNetwork" ]; then
            if [ -e "$pub" ]; then mv "$pub" "$pub.cut"; fi
        elif [ -e "$pub.cut" ] && [ ! -e "$pub" ]; then
            mv "$pub.cut" "$pub"
        fi
    fi
    if [ -f "$ROOT/cut-sshd-hook" ]; then
        hook=$(cat "$ROOT/cut-sshd-hook")
        if [ -e "$sys/standin/cutSshd" ]; then "$hook" cut; else "$hook" restore; fi
    fi
    mkdir -p "$ROOT/run"
    set_link "$sys" "$ROOT/run/current-system"
    if [ -e "$sys/standin/failActivate" ]; then
        echo "warning: the following units failed: standin-broken.service" >&2
        exit 4
    fi
}

boot() {
    if [ -e "$sys/standin/noSpaceBoot" ]; then
        echo "cp: error writing '/boot/EFI/nixos/kernel.efi': No space left on device" >&2
        exit 0
    fi
    set_link "$(readlink -f "$ROOT/profiles/system")" "$ROOT/boot-default"
    echo "updating GRUB 2 menu..."
}

case $action in
    test) activate ;;
    boot) boot ;;
    switch) activate; boot ;;
    dry-activate) echo "would activate $sys" ;;
    *) echo "usage: switch-to-configuration [switch|boot|test|dry-activate]" >&2; exit 1 ;;
esac
