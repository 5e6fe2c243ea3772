# `<nixpkgs/nixos>` of the stand-in (NIX_PATH nixpkgs=<this directory's parent>):
# `nix-build '<nixpkgs/nixos>' -A system -I nixos-config=…/configuration.nix`.
{ configuration ? <nixos-config>, system ? builtins.currentSystem }:
let
  lib = import ../lib.nix;
  evaluated = lib.nixosSystem { modules = [ configuration ]; inherit system; };
in {
  inherit (evaluated) config;
  system = evaluated.config.system.build.toplevel;
}
