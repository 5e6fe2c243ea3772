# A machine that is the fleet server and a workstation with agent and tray at once, for the
# flake's `nixos-modules` check: `nix flake check ./packaging` evaluates it with the real nixpkgs
# (every module, every assertion) through to its derivation, without building it.
# tests/packaging.rs evaluates the same settings against each module's stand-in.
{
  system.stateVersion = "25.05";
  boot.loader.grub.enable = false;
  fileSystems."/" = { device = "/dev/disk/by-label/nixos"; fsType = "ext4"; };
  networking.hostName = "laptop";

  services.tiffin.server = {
    enable = true;
    fleetFile = ../../tests/fixtures/packaging/fleet.toml;
  };
  services.tiffin.agent = {
    enable = true;
    server = "fleet.example.org";
    port = 2222;
    serverHostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDsdO2/P2LoPncj3x48T3pwIv4gN0/H/zfak2miDp5nl root@server";
    trustedKey = "/etc/tiffin/fleet-signing.pub";
    maxAge = "30d";
  };
  services.tiffin.tray.enable = true;
}
