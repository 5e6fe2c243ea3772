# tiffin's flake: the package (with and without the tray), an overlay, the NixOS modules, checks
# and a dev shell. It lives in packaging/ but builds the whole repository, so use it through git,
# from the repository's root: `nix build ./packaging`, `nix develop ./packaging`,
# `nix flake check ./packaging` (files must be tracked).
{
  description = "tiffin: keep a fleet of NixOS machines on one repository's configuration";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # packaging/checks/example-system.nix on the real NixOS: what the `nixos-modules` check
      # evaluates to show that the three modules fit NixOS.
      exampleSystem = system: nixpkgs.lib.nixosSystem {
        inherit system;
        modules = [ self.nixosModules.default ./checks/example-system.nix ];
      };
    in
    {
      packages = forAllSystems (pkgs: {
        default = pkgs.callPackage ./nix/package.nix { };
        headless = pkgs.callPackage ./nix/package.nix { withTray = false; };
      });

      # `tiffin` and `tiffin-headless` in any nixpkgs.
      overlays.default = final: _prev: {
        tiffin = final.callPackage ./nix/package.nix { };
        tiffin-headless = final.callPackage ./nix/package.nix { withTray = false; };
      };

      # The modules build packaging/nix/package.nix with the machine's own nixpkgs by default.
      nixosModules = {
        server = ./nixos/server.nix;
        agent = ./nixos/agent.nix;
        tray = ./nixos/tray.nix;
        default = { imports = [ ./nixos/server.nix ./nixos/agent.nix ./nixos/tray.nix ]; };
      };

      checks = forAllSystems (pkgs:
        let system = pkgs.stdenv.hostPlatform.system;
        in
        {
          # Builds the package and runs its unit tests (the package's checkPhase).
          package = self.packages.${system}.headless;
          tray-package = self.packages.${system}.default;
          # Evaluates the example system through to its derivation (every module, every
          # assertion) without building it.
          nixos-modules = pkgs.writeText "tiffin-nixos-modules-eval"
            (builtins.unsafeDiscardStringContext (exampleSystem system).config.system.build.toplevel.drvPath);
        });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ self.packages.${pkgs.stdenv.hostPlatform.system}.default ];
          packages = with pkgs; [
            cargo rustc clippy rustfmt
            openssh rsync xvfb-run dbus desktop-file-utils systemd
            glib imagemagick iproute2 procps python3 python3Packages.dbus-python python3Packages.pygobject3
            libfaketime
          ];
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixpkgs-fmt);
    };
}
