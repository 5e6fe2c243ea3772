# services.tiffin.tray: the tray app in every graphical session of this machine (docs/tray.md).
# The tray is a client of the local agent, so this module imports agent.nix and lends the agent
# its package (one build with the tray instead of two).
{ config, lib, pkgs, ... }:

let
  cfg = config.services.tiffin.tray;
  desktopFile = "${cfg.package}/share/applications/tiffin-tray.desktop";
in
{
  imports = [ ./agent.nix ];

  options.services.tiffin.tray = {
    enable = lib.mkEnableOption "the tiffin tray app (status, \"Update now\", notifications) in graphical sessions";

    package = lib.mkOption {
      type = lib.types.package;
      default = pkgs.callPackage ../nix/package.nix { };
      defaultText = lib.literalMD "tiffin (`packaging/nix/package.nix`, with the tray)";
      description = "The tiffin package providing `tiffin-tray`.";
    };

    autostart = lib.mkOption {
      type = lib.types.enum [ "xdg" "systemd" "none" ];
      default = "xdg";
      description = ''
        How the tray starts with a graphical session.
        `xdg`: /etc/xdg/autostart/tiffin-tray.desktop, honoured by GNOME, KDE, Xfce, Cinnamon,
        MATE, LXQt; each user can turn it off from the tray's "Start at login" (which writes a
        Hidden=true copy to ~/.config/autostart).
        `systemd`: a user service bound to graphical-session.target, for sessions that start that
        target but do not read XDG autostart (e.g. sway or Hyprland with a session manager).
        `none`: users start it themselves (it is in the applications menu).
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    environment.systemPackages = [ cfg.package ];

    services.tiffin.agent.package = lib.mkDefault cfg.package;

    environment.etc."xdg/autostart/tiffin-tray.desktop" = lib.mkIf (cfg.autostart == "xdg") {
      source = desktopFile;
    };

    systemd.user.services.tiffin-tray = lib.mkIf (cfg.autostart == "systemd") {
      description = "tiffin tray: this machine's update status";
      wantedBy = [ "graphical-session.target" ];
      partOf = [ "graphical-session.target" ];
      after = [ "graphical-session.target" ];
      serviceConfig = {
        ExecStart = "${cfg.package}/bin/tiffin-tray";
        # The tray reconnects to the agent by itself; this covers a crash of the tray.
        Restart = "on-failure";
        RestartSec = "5s";
      };
    };

    warnings = lib.optional (!config.services.tiffin.agent.enable)
      "services.tiffin.tray is enabled without services.tiffin.agent: the tray will show \"agent unreachable\" until an agent runs on this machine.";
  };
}
