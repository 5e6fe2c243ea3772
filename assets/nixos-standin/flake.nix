# The stand-in as a flake input: `inputs.nixpkgs.url = "path:…/nixos-standin";`, then
# `nixpkgs.lib.nixosSystem { system = "x86_64-linux"; modules = [ ./configuration.nix ]; }`.
{
  outputs = { self }: { lib = import ./lib.nix; };
}
