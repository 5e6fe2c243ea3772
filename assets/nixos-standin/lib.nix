# A NixOS stand-in, evaluated and built by real Nix (tiffin's tests and `tiffin demo`).
#
# It merges a configuration's modules (`imports` followed, attribute sets merged, lists
# concatenated; a module may be a path, an attribute set or a function of { config, lib, pkgs,
# ... }) and builds a system: a real store path made by a /bin/sh builder, with no network, that
# holds `bin/switch-to-configuration` and links `kernel`, `initrd` and `kernel-modules` into a
# separate `linux-<version>` store path (so "reboot needed" and `nix store diff-closures` see a
# kernel change). Nothing of NixOS's activation is real: switch-to-configuration acts on a
# sandbox root (see switch-to-configuration.sh).
#
# Knobs, read from the configuration (`standin.<knob>`):
#   failBuild     the system's builder fails
#   noSpace       evaluation prints "No space left on device" (the build still succeeds)
#   failActivate  `switch-to-configuration test` switches, then fails (exit 4)
#   cutNetwork    activating this system moves the publication aside (another moves it back)
#   cutSshd       activating this system runs `$ROOT/cut-sshd-hook cut` (another: `restore`)
#   noSpaceBoot   `switch-to-configuration boot` prints "No space left on device", exits 0
#   kernel        the kernel version (default "6.1")
#   buildSleep    seconds the system's builder sleeps first (a build that hangs)
#   activateSleep seconds `switch-to-configuration test` sleeps first (an activation that hangs)
#   packages      { name = "version"; … }: one store path per package, `pkg-<name>-<version>`,
#                 holding `packageBytes` (default 65536) random bytes, linked under sw/
#   nonce         a string in every package's derivation (a test's packages are its own)
rec {
  # Attribute sets merged recursively, lists concatenated, anything else: the later wins.
  merge = a: b:
    a // builtins.mapAttrs (n: v:
      if a ? ${n} && builtins.isAttrs v && builtins.isAttrs a.${n} then merge a.${n} v
      else if a ? ${n} && builtins.isList v && builtins.isList a.${n} then a.${n} ++ v
      else v) b;

  # A few package names, enough for `environment.systemPackages = with pkgs; [ git vim ];`
  # (names only: the stand-in installs nothing).
  pkgs = builtins.listToAttrs (map (n: { name = n; value = n; })
    [ "git" "vim" "htop" "curl" "firefox" "tmux" "openssh" ]);

  # The merged configuration of a list of modules.
  evalModules = { modules, specialArgs ? { } }:
    let
      args = { inherit config pkgs; lib = { }; modulesPath = ./nixos; } // specialArgs;
      load = m:
        let v = if builtins.isPath m || builtins.isString m then import m else m;
        in if builtins.isFunction v then v args else v;
      collect = ms: builtins.concatMap (m:
        let v = load m;
        in [ (removeAttrs v [ "imports" ]) ] ++ collect (v.imports or [ ])) ms;
      config = builtins.foldl' merge { } (collect modules);
    in config;

  kernelOf = system: version: derivation {
    name = "linux-${version}";
    inherit system;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    args = [ "-c" ''
      set -e
      mkdir -p "$out/lib/modules/${version}"
      echo "kernel ${version}" > "$out/bzImage"
      echo "initrd ${version}" > "$out/initrd"
    '' ];
  };

  # A package: `bytes` random (incompressible, like a binary) bytes in a store path of its own.
  packageOf = system: nonce: bytes: name: version: derivation {
    name = "pkg-${name}-${version}";
    inherit system nonce;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    args = [ "-c" "mkdir -p $out && head -c ${toString bytes} /dev/urandom > $out/payload" ];
  };

  # The system of a merged configuration.
  toplevel = system: config:
    let
      s = config.standin or { };
      on = k: s.${k} or false;
      knobs = builtins.filter on [ "failActivate" "cutNetwork" "cutSshd" "noSpaceBoot" ];
      kernel = kernelOf system (s.kernel or "6.1");
      host = config.networking.hostName or "nixos";
      sleepFor = k: toString (s.${k} or 0);
      packages = builtins.attrValues (builtins.mapAttrs
        (packageOf system (s.nonce or "") (s.packageBytes or 65536)) (s.packages or { }));
      # Empty without packages, so that a system without them is built as before.
      linkPackages = if packages == [ ] then "" else
        "\nmkdir -p $out/sw" + builtins.concatStringsSep ""
          (map (p: "\nln -s ${p} $out/sw/") packages);
      warn = if on "noSpace" then builtins.trace "error: writing to file: No space left on device" else (x: x);
    in warn (derivation {
      name = "nixos-system-${host}";
      inherit system;
      builder = "/bin/sh";
      PATH = "/usr/bin:/bin";
      configuration = builtins.toJSON config;
      knobs = toString knobs;
      activateSleep = sleepFor "activateSleep";
      stc = ./switch-to-configuration.sh;
      args = [ "-c" ''
        set -e
        ${if s ? buildSleep then "sleep ${sleepFor "buildSleep"}" else ""}
        ${if on "failBuild" then ''
          echo "error: the stand-in system of ${host} fails to build (standin.failBuild)" >&2
          exit 1
        '' else ""}
        mkdir -p "$out/bin" "$out/standin"
        cp "$stc" "$out/bin/switch-to-configuration"
        chmod 0555 "$out/bin/switch-to-configuration"
        ln -s ${kernel}/bzImage "$out/kernel"
        ln -s ${kernel}/initrd "$out/initrd"
        ln -s ${kernel}/lib "$out/kernel-modules"
        printf '%s\n' "$configuration" > "$out/configuration.json"
        for k in $knobs; do : > "$out/standin/$k"; done
        if [ "$activateSleep" != 0 ]; then echo "$activateSleep" > "$out/standin/activateSleep"; fi${linkPackages}
      '' ];
    });

  # Like nixpkgs' `lib.nixosSystem`: what a flake puts under `nixosConfigurations.<host>`.
  nixosSystem = { modules, system ? "x86_64-linux", specialArgs ? { } }:
    let config = evalModules { inherit modules specialArgs; };
    in {
      config = merge config { system.build.toplevel = toplevel system config; };
    };
}
