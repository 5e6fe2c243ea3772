# services.tiffin.agent: the pull agent on each machine of the fleet (DESIGN §3, §10).
# Renders /etc/tiffin/agent.toml and /etc/tiffin/known_hosts (the server's pinned key) from the
# options through ./lib.nix, checks agent.toml with the package's own parser at build time, and
# runs `tiffin agent` as a notify service that a switch never restarts (it may be the one
# switching).
{ config, lib, pkgs, ... }:

let
  tiffinLib = import ./lib.nix;
  cfg = config.services.tiffin.agent;
  inherit (lib) mkOption types;

  knownHostsFile = "/etc/tiffin/known_hosts";
  usesSftp = cfg.source == null;

  agentToml = tiffinLib.agentToml (cfg // {
    inherit knownHostsFile;
    # Absolute paths: the service's PATH is not the user's.
    system = {
      nix = "${config.nix.package}/bin/nix";
      nix_build = "${config.nix.package}/bin/nix-build";
      nix_env = "${config.nix.package}/bin/nix-env";
      systemd_run = "${config.systemd.package}/bin/systemd-run";
    };
  });

  # A mistake in agent.toml fails `nixos-rebuild`, not the agent on the next boot.
  agentTomlFile =
    let unchecked = pkgs.writeText "tiffin-agent.toml" agentToml;
    in
    if !cfg.checkConfig then unchecked
    else pkgs.runCommand "tiffin-agent.toml" { } ''
      ${cfg.package}/bin/tiffin agent --config ${unchecked} --check-config
      cp ${unchecked} $out
    '';

  durationRe = "[0-9]+ ?[a-z]+( ?[0-9]+ ?[a-z]+)*";
  durations = {
    inherit (cfg) interval jitter deadline verifyTimeout;
  };
in
{
  options.services.tiffin.agent = {
    enable = lib.mkEnableOption "the tiffin agent, which keeps this machine on the configuration its fleet server publishes";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ../nix/package.nix { withTray = false; };
      defaultText = lib.literalExpression "tiffin-headless; the tray module sets its own package (with the tray)";
      description = "The tiffin package whose `tiffin agent` runs.";
    };

    host = mkOption {
      type = types.str;
      default = config.networking.hostName;
      defaultText = lib.literalExpression "config.networking.hostName";
      description = "This machine's name in fleet.toml (`[hosts.<name>]`).";
    };

    server = mkOption {
      type = types.str;
      default = "";
      example = "fleet.example.org";
      description = "The fleet server's host name or address (fleet.toml's `server`).";
    };

    port = mkOption {
      type = types.port;
      default = 22;
      description = "The fleet server's SSH port.";
    };

    user = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "This host's user on the server; null means the host's name (fleet.toml's `user`).";
    };

    source = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "file:///srv/tiffin/laptop";
      description = ''
        Where the publication is read from. null: `sftp://<user>@<server>:<port>/`. A `file:///`
        source needs no server, key or known_hosts (the server itself, tests).
      '';
    };

    identityFile = mkOption {
      type = types.str;
      default = "/etc/tiffin/id_ed25519";
      description = ''
        The host's SSH private key. Created (ed25519) on the first start when missing; its public
        half, `''${identityFile}.pub`, goes into fleet.toml. A string, not a path: a path would be
        copied into the world-readable Nix store.
      '';
    };

    serverHostKey = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA…";
      description = ''
        The server's SSH host key (its /etc/ssh/ssh_host_ed25519_key.pub), pinned in
        /etc/tiffin/known_hosts as `[server]:port <key>`. The agent refuses any other key.
      '';
    };

    interval = mkOption {
      type = types.str;
      default = "15m";
      description = "Time between checks.";
    };

    jitter = mkOption {
      type = types.str;
      default = "2m";
      description = "Random delay added to each interval, so that the fleet does not check at once.";
    };

    policy = mkOption {
      type = types.enum [ "auto" "notify" ];
      default = "auto";
      description = "`auto` applies a new configuration at once; `notify` tells the user and waits for them or for the deadline.";
    };

    deadline = mkOption {
      type = types.str;
      default = "24h";
      description = "With policy `notify`: apply anyway after this long.";
    };

    operation = mkOption {
      type = types.enum [ "switch" "boot" ];
      default = "switch";
      description = "`switch` activates a verified configuration now; `boot` only makes it the next boot's default.";
    };

    verifyTimeout = mkOption {
      type = types.str;
      default = "60s";
      description = "How long verification after activation may take before the agent rolls back.";
    };

    healthChecks = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "systemctl is-active sshd.service" "ping -c1 -W2 gateway" ];
      description = "Commands that must succeed after activation; any failure rolls back.";
    };

    socketGroup = mkOption {
      type = types.str;
      default = "users";
      description = "Members may read the status, check and update through /run/tiffin/agent.sock (the tray's user must be one).";
    };

    adminGroup = mkOption {
      type = types.str;
      default = "wheel";
      description = "Members (and root) may also roll back.";
    };

    httpTrigger = mkOption {
      type = types.str;
      default = "127.0.0.1:9999";
      description = "Loopback address where `GET /` starts an update (a bookmark); \"\" turns it off.";
    };

    trustedKey = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "The admin's ed25519 public key file; when set, unsigned manifests are refused.";
    };

    checkConfig = mkOption {
      type = types.bool;
      default = true;
      description = "Check agent.toml with `tiffin agent --check-config` while building the system.";
    };

    useServerCache = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Substitute from the fleet server's Nix store over SSH (server: binaryCache.enable), with
        the same key and pinned host key. Needs serverCachePublicKey.
      '';
    };

    serverCachePublicKey = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "fleet.example.org-1:AbCd…=";
      description = "The public half of the server's binaryCache.secretKeyFile.";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = builtins.match "[a-z_][a-z0-9_-]{0,31}" cfg.host != null;
        message = "services.tiffin.agent.host = \"${cfg.host}\" must be this machine's name in fleet.toml: lower-case letters, digits, '-' and '_'.";
      }
      {
        assertion = usesSftp -> cfg.server != "";
        message = "services.tiffin.agent.server is not set: give the fleet server's name (fleet.toml's `server`), or a `file:///` source.";
      }
      {
        assertion = usesSftp -> cfg.serverHostKey != null;
        message = ''
          services.tiffin.agent.serverHostKey is not set: the agent pins the server's host key and refuses unknown ones.
          Set it to the server's /etc/ssh/ssh_host_ed25519_key.pub, e.g. from `ssh-keyscan -p ${toString cfg.port} -t ed25519 ${if cfg.server == "" then "<server>" else cfg.server}`.'';
      }
      {
        assertion = cfg.source == null || lib.hasPrefix "sftp://" cfg.source || lib.hasPrefix "file:///" cfg.source;
        message = "services.tiffin.agent.source = \"${toString cfg.source}\" is neither sftp://user@host:port/ nor file:///path.";
      }
      {
        assertion = !(lib.hasPrefix builtins.storeDir cfg.identityFile);
        message = "services.tiffin.agent.identityFile points into the Nix store, which everyone can read: use a path like /etc/tiffin/id_ed25519.";
      }
      {
        assertion = config.users.groups ? ${cfg.socketGroup};
        message = "services.tiffin.agent.socketGroup = \"${cfg.socketGroup}\" is not a group of this system; add users.groups.${cfg.socketGroup} = { }; or pick an existing one.";
      }
      {
        assertion = config.users.groups ? ${cfg.adminGroup};
        message = "services.tiffin.agent.adminGroup = \"${cfg.adminGroup}\" is not a group of this system; add users.groups.${cfg.adminGroup} = { }; or pick an existing one.";
      }
      {
        assertion = cfg.httpTrigger == "" || builtins.match "([0-9.]+|[[][0-9a-fA-F:.]+[]]):[0-9]+" cfg.httpTrigger != null;
        message = "services.tiffin.agent.httpTrigger = \"${cfg.httpTrigger}\" is not an address like 127.0.0.1:9999 (\"\" turns it off).";
      }
      {
        assertion = cfg.useServerCache -> (cfg.serverCachePublicKey != null && usesSftp);
        message = "services.tiffin.agent.useServerCache needs serverCachePublicKey (the server's binaryCache key) and an sftp source (server, port, serverHostKey).";
      }
    ] ++ lib.mapAttrsToList
      (name: value: {
        assertion = builtins.match durationRe value != null;
        message = "services.tiffin.agent.${name} = \"${value}\" is not a duration like \"15m\", \"60s\" or \"1h 30m\".";
      })
      durations;

    environment.systemPackages = [ cfg.package ];

    environment.etc."tiffin/agent.toml".source = agentTomlFile;
    environment.etc."tiffin/known_hosts" = lib.mkIf (usesSftp && cfg.serverHostKey != null) {
      text = tiffinLib.knownHosts { inherit (cfg) server port serverHostKey; };
      mode = "0644";
    };

    # StateDirectory creates it for the unit too; the rule also keeps its mode right for tools
    # run by hand before the first start.
    systemd.tmpfiles.rules = [
      "d /var/lib/tiffin 0700 root root -"
      "d /etc/tiffin 0755 root root -"
    ];

    systemd.services.tiffin-agent = {
      description = "tiffin agent: keeps this machine on its fleet configuration";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" "nix-daemon.socket" ];
      # A switch must not restart the agent: it may be the process running that switch
      # (DESIGN §3); the new agent starts at the next boot or `systemctl restart`.
      restartIfChanged = false;
      # The builds and checks it runs (nix, git for flake inputs, ssh for ssh substituters).
      path = [ config.nix.package pkgs.gitMinimal pkgs.openssh config.systemd.package ];
      environment = config.nix.envVars // {
        HOME = "/root";
      } // lib.optionalAttrs (config.environment.sessionVariables ? NIX_PATH) {
        # The non-flake build uses <nixpkgs/nixos>.
        inherit (config.environment.sessionVariables) NIX_PATH;
      } // config.networking.proxy.envVars;
      # Creates the host's key on the first start; its .pub goes into fleet.toml.
      preStart = ''
        if [ ! -e ${lib.escapeShellArg cfg.identityFile} ]; then
          mkdir -p "$(dirname ${lib.escapeShellArg cfg.identityFile})"
          ${pkgs.openssh}/bin/ssh-keygen -q -t ed25519 -N "" -C "root@${cfg.host}" -f ${lib.escapeShellArg cfg.identityFile}
          echo "tiffin: created ${cfg.identityFile}; add this to [hosts.${cfg.host}] in fleet.toml:"
          echo "key = \"$(cat ${lib.escapeShellArg cfg.identityFile}.pub)\""
        fi
      '';
      serviceConfig = tiffinLib.agentServiceConfig // {
        ExecStart = "${cfg.package}/bin/tiffin agent --config /etc/tiffin/agent.toml";
      };
    };

    nix.settings = lib.mkIf cfg.useServerCache {
      substituters = [ "ssh-ng://nix-ssh@${cfg.server}?ssh-key=${cfg.identityFile}" ];
      trusted-public-keys = [ cfg.serverCachePublicKey ];
    };
    # nix-daemon's ssh reads the system-wide known hosts and config, not /etc/tiffin.
    programs.ssh = lib.mkIf cfg.useServerCache {
      knownHosts.tiffin-server = {
        hostNames = [ "[${cfg.server}]:${toString cfg.port}" ] ++ lib.optional (cfg.port == 22) cfg.server;
        publicKey = cfg.serverHostKey;
      };
      extraConfig = lib.optionalString (cfg.port != 22) ''
        Host ${cfg.server}
          Port ${toString cfg.port}
      '';
    };
  };
}
