# Shared helpers of the fake NixOS. Sourced by the fake commands; POSIX sh.
#
# Real Nix runs the pipeline, `fleet build`, `fleet diff` and the demo's real-Nix test on the NixOS
# stand-in (assets/nixos-standin); the pipeline and faults tests' default machine is the stand-in.
# These scripts remain for what real Nix cannot do on cue: stop a step at an exact point
# (pause-<step>, for the kill tests and the few that hold a step), the daemon, tray and signing
# tests' agent, `systemd-run` (no systemd in the test machine), and `tiffin demo` where Nix cannot
# build.
#
# Everything lives under $FAKE_NIXOS_ROOT (a test's temp dir):
#   store/                  the fake Nix store
#   run/current-system      link to the running system
#   run/booted-system       link to the booted system
#   profiles/system         the system profile (-> system-<n>-link -> store path)
#   boot-default            link set by `switch-to-configuration boot` (the profile's system)
#   publication             optional: the path of the host's file:// publication (CUT_NETWORK)
#   cut-sshd-hook           optional: the path of an executable that activation runs as
#                           `HOOK cut` for a CUT_SSHD system and `HOOK restore` for any other
#                           (the sshd tests: it makes the real test sshd refuse this host)
#   calls.log               one line per fake command run
#   pause-<step>            while present, <step> waits (build, activate, boot); it writes
#                           paused-<step> while waiting and exited-<step> when it ends
#
# Knobs, as files at the top of the tree being built:
#   FAIL_BUILD      the build fails
#   NO_SPACE        the build prints "No space left on device" and exits 0
#   FAIL_ACTIVATE   `switch-to-configuration test` switches, then fails (exit 4)
#   CUT_NETWORK     activating this system moves the publication aside; activating another
#                   system moves it back
#   CUT_SSHD        activating this system runs `$(cat cut-sshd-hook) cut`; activating
#                   another system runs `… restore` (nothing without cut-sshd-hook)
#   NO_SPACE_BOOT   `switch-to-configuration boot` prints "No space left on device", exits 0
#   NEW_KERNEL      its content is the kernel version (default 6.1)

# A fake command whose reader died must not die of SIGPIPE half-way.
trap '' PIPE

: "${FAKE_NIXOS_ROOT:?FAKE_NIXOS_ROOT is not set}"
ROOT=$FAKE_NIXOS_ROOT
STORE=$ROOT/store
FAKE_LIB_DIR=${FAKE_LIB_DIR:-$(cd "$(dirname "$0")" && pwd -P)}

say() { printf '%s\n' "$*" 2>/dev/null || true; }
warn() { printf '%s\n' "$*" >&2 2>/dev/null || true; }
die() { warn "$*"; exit 1; }
log_call() { printf '%s\n' "$*" >> "$ROOT/calls.log"; }

# Replaces link $2 by a link to $1, atomically.
set_link() {
    tmp="$2.tmp.$$"
    rm -f "$tmp"
    ln -s "$1" "$tmp"
    mv -fT "$tmp" "$2"
}

# Waits while $ROOT/pause-$1 exists.
pause_point() {
    if [ -e "$ROOT/pause-$1" ]; then
        trap 'touch "$ROOT/exited-'"$1"'"' EXIT
        echo $$ > "$ROOT/paused-$1"
        while [ -e "$ROOT/pause-$1" ]; do sleep 0.05; done
        rm -f "$ROOT/paused-$1"
    fi
}

hash_of() { sha256sum | cut -c1-32; }

# Builds the fake system of tree $1 for host $2 and sets BUILT to its store path (in this
# shell, not a subshell: a paused build's pid file must name the process tests signal).
build_system() {
    tree=$1
    host=$2
    [ -d "$tree" ] || die "error: getting status of '$tree': No such file or directory"
    pause_point build
    if [ -e "$tree/FAIL_BUILD" ]; then
        warn "error: builder for '/nix/store/00000000000000000000000000000000-nixos-system-$host.drv' failed with exit code 1"
        warn "error: attribute 'fail' missing (FAIL_BUILD)"
        exit 1
    fi
    h=$(cd "$tree" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum | hash_of)
    kver=6.1
    if [ -s "$tree/NEW_KERNEL" ]; then kver=$(head -n1 "$tree/NEW_KERNEL"); fi
    mkdir -p "$STORE"
    kdir=$STORE/$(printf 'linux-%s' "$kver" | hash_of)-linux-$kver
    if [ ! -d "$kdir" ]; then
        mkdir -p "$kdir.tmp/lib/modules/$kver"
        echo "kernel $kver" > "$kdir.tmp/bzImage"
        echo "initrd $kver" > "$kdir.tmp/initrd"
        mv "$kdir.tmp" "$kdir"
    fi
    # Like `nix build path:…`: the whole tree is copied into the (world-readable) store.
    src=$STORE/$h-source
    if [ ! -d "$src" ]; then
        rm -rf "$src.tmp"
        cp -R "$tree" "$src.tmp"
        mv "$src.tmp" "$src"
    fi
    out=$STORE/$h-nixos-system-$host
    if [ ! -d "$out" ]; then
        rm -rf "$out.tmp"
        mkdir -p "$out.tmp/bin"
        cp "$FAKE_LIB_DIR/switch-to-configuration" "$out.tmp/bin/switch-to-configuration"
        chmod 0755 "$out.tmp/bin/switch-to-configuration"
        printf '%s\n' "$ROOT" > "$out.tmp/fake-root"
        printf '%s\n' "$FAKE_LIB_DIR" > "$out.tmp/fake-lib"
        ln -s "$kdir/bzImage" "$out.tmp/kernel"
        ln -s "$kdir/initrd" "$out.tmp/initrd"
        ln -s "$kdir/lib" "$out.tmp/kernel-modules"
        for k in FAIL_ACTIVATE CUT_NETWORK CUT_SSHD NO_SPACE_BOOT; do
            if [ -e "$tree/$k" ]; then touch "$out.tmp/$k"; fi
        done
        mv "$out.tmp" "$out"
    fi
    if [ -e "$tree/NO_SPACE" ]; then
        warn "error: writing to file: No space left on device"
    fi
    BUILT=$out
}
