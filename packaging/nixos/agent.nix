# services.tiffin.agent: the pull agent on each machine of the fleet (docs/agent.md, §10).
# Renders /etc/tiffin/agent.toml and /etc/tiffin/known_hosts (the server's pinned key) from the
# options through ./lib.nix, checks agent.toml with the package's own parser at build time, and
# runs `tiffin agent` as a notify service that a switch neither restarts nor stops (it may be the
# one switching). The HTTP trigger's port is held by a socket unit, so no user can take it first.
# Mutable state (the host's key) lives in /var/lib/tiffin: /etc may be an immutable overlay.
{ config, lib, pkgs, ... }:

let
  tiffinLib = import ./lib.nix;
  cfg = config.services.tiffin.agent;
  inherit (lib) mkOption types;

  knownHostsFile = "/etc/tiffin/known_hosts";
  # { user; server; port; } of an sftp source (explicit or from server/port), null for file:///.
  endpoint = tiffinLib.agentEndpoint cfg;
  usesSftp = cfg.source == null || lib.hasPrefix "sftp://" cfg.source;
  # A read-only web server (docs/serving.md): no server key or known_hosts.
  usesHttp = cfg.source != null && (lib.hasPrefix "https://" cfg.source || lib.hasPrefix "http://" cfg.source);
  # The server to name in messages: the explicit source's, or the server option.
  serverName = if endpoint == null || endpoint.server == "" then "<server>" else endpoint.server;
  knownHostsText = if usesSftp && endpoint != null then tiffinLib.agentKnownHosts cfg else null;
  # The socket unit that holds the trigger's port (the same name as packaging/systemd/'s).
  triggerSocket = "tiffin-agent-http";
  triggerUnits = lib.optional (cfg.httpTrigger != "") "${triggerSocket}.socket";

  agentToml = tiffinLib.agentToml (cfg // {
    inherit knownHostsFile;
    # [backup] only when enabled; restic from nixpkgs, by its store path.
    backup = if cfg.backup.enable then {
      inherit (cfg.backup) paths exclude schedule jitter keep passwordFile;
      restic = "${pkgs.restic}/bin/restic";
    } else null;
    # Absolute paths: the service's PATH is not the user's.
    system = {
      nix = "${config.nix.package}/bin/nix";
      nix_build = "${config.nix.package}/bin/nix-build";
      nix_env = "${config.nix.package}/bin/nix-env";
      nix_store = "${config.nix.package}/bin/nix-store";
      systemd_run = "${config.systemd.package}/bin/systemd-run";
    };
  });

  # A mistake in agent.toml fails `nixos-rebuild`, not the agent on the next boot. The check runs
  # the machine's own binary at build time, which a cross build cannot run: then it is skipped.
  canRunHostBinaries = pkgs.stdenv.buildPlatform.canExecute pkgs.stdenv.hostPlatform;
  agentTomlFile =
    let unchecked = pkgs.writeText "tiffin-agent.toml" agentToml;
    in
    if !cfg.checkConfig || !canRunHostBinaries then unchecked
    else pkgs.runCommand "tiffin-agent.toml" { } ''
      ${cfg.package}/bin/tiffin agent --config ${unchecked} --check-config
      cp ${unchecked} $out
    '';

  durationRe = "[0-9]+ ?[a-z]+( ?[0-9]+ ?[a-z]+)*";
  durations = {
    inherit (cfg) interval jitter deadline verifyTimeout;
  } // lib.filterAttrs (_: v: v != null) {
    inherit (cfg) maxAge buildTimeout activateTimeout;
  };

  # The host key's default place: state, not configuration (/etc may be read-only).
  defaultIdentity = "/var/lib/tiffin/id_ed25519";
  # Where earlier versions of this module created it; moved on the first start after an upgrade,
  # so that the key in fleet.toml stays valid.
  oldIdentity = "/etc/tiffin/id_ed25519";
  ssh = config.programs.ssh.package;
in
{
  options.services.tiffin.agent = {
    enable = lib.mkEnableOption "the tiffin agent, which keeps this machine on the configuration its fleet server publishes";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ../nix/package.nix { withTray = false; };
      defaultText = lib.literalMD "tiffin-headless (`packaging/nix/package.nix` without the tray); the tray module sets its own package, with the tray";
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
        Where the publication is read from. null: `sftp://<user>@<server>:<port>/`. An explicit
        `sftp://` source gets the same pinned host key (serverHostKey) for its host and port. A
        `file:///` source needs no server, key or known_hosts (the server itself, tests).
      '';
    };

    sources = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "sftp://laptop@tiffin.example:22/" "sftp://laptop@mirror.example:22/" "https://cdn.example/k3P0yq…/" ];
      description = ''
        Several sources, tried in order each cycle (agent.toml `sources`, docs/agent.md "Several
        sources"); when set, it replaces `source`. A source serving a generation below the highest
        this machine has seen is skipped. Only server/port (or `source`) is pinned in known_hosts
        by serverHostKey: a mirror on another host or port needs its own line there.
      '';
    };

    reportTo = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "sftp://laptop@tiffin.example:22/";
      description = ''
        Where reports, `seen.json` and backups go (agent.toml `report_to`); null: the first
        `sftp://` source. While it is down, reports wait in the agent's outbox.
      '';
    };

    identityFile = mkOption {
      type = types.str;
      default = defaultIdentity;
      description = ''
        The host's SSH private key. Created (ed25519) on the first start when missing; its public
        half, `''${identityFile}.pub`, goes into fleet.toml. A string, not a path: a path would be
        copied into the world-readable Nix store. The default is state, not configuration: a key
        that earlier versions created as ${oldIdentity} is moved here on the first start.
      '';
    };

    serverHostKey = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA…";
      description = ''
        The server's SSH host key (its /etc/ssh/ssh_host_ed25519_key.pub), pinned in
        /etc/tiffin/known_hosts as `[server]:port <key>` (the host and port of `source` when that
        is an explicit `sftp://` URL). The agent refuses any other key. Required for sftp sources.
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
      description = ''
        Loopback address (`127.x.y.z:port` or `[::1]:port`) where `GET /` starts an update (a
        bookmark); "" turns it off. The socket unit `tiffin-agent-http.socket` binds it at boot
        and hands it to the agent, so no local user can take the port first.
      '';
    };

    trustedKey = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/etc/tiffin/fleet-signing.pub";
      description = ''
        Absolute path of the admin's ed25519 public key file (`tiffin fleet keygen`'s `.pub`); when
        set, unsigned, wrongly signed and replayed manifests are refused. An sftp source needs it,
        or allowUnsigned.
      '';
    };

    allowUnsigned = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Accept unsigned publications from an sftp source (agent.toml `allow_unsigned = true`):
        then whoever controls the server decides what this machine runs, as root. Without it an
        sftp source needs trustedKey.
      '';
    };

    httpCa = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/etc/tiffin/fleet-ca.pem";
      description = ''
        For an https:// source: absolute path of the PEM file of the CA the web server's
        certificate must be issued by (agent.toml `http_ca`); null: the system's roots.
      '';
    };

    maxAge = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "30d";
      description = ''
        Refuse a publication signed longer ago than this (agent.toml `max_age`), so that a server
        that keeps serving an old configuration is noticed. null: no limit.
      '';
    };

    build = mkOption {
      type = types.nullOr (types.enum [ "auto" "local" "prebuilt" ]);
      default = null;
      example = "prebuilt";
      description = ''
        How this machine gets a generation's system (agent.toml `build`): "auto" (the agent's
        default) imports it from the host's own binary cache in its publication when the server
        published one (`tiffin fleet publish --build`), else builds here; "prebuilt" never
        evaluates or builds (a small machine); "local" always builds here.
      '';
    };

    buildTimeout = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "2h";
      description = "How long building the system may take (agent.toml `build_timeout`); null: the agent's default.";
    };

    activateTimeout = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "10m";
      description = "How long activating the system may take (agent.toml `activate_timeout`); null: the agent's default.";
    };

    backup = {
      enable = lib.mkEnableOption "backups of this machine with restic into its own backup/ on the fleet server (docs/backup.md)";
      paths = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "/home" "/etc" ];
        description = "Absolute paths to back up (agent.toml `[backup] paths`).";
      };
      exclude = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "/home/*/.cache" ];
        description = "restic --exclude patterns.";
      };
      schedule = mkOption {
        type = types.str;
        default = "daily";
        description = "\"hourly\", \"daily\", \"weekly\" or a duration; a backup older than twice this is stale.";
      };
      jitter = mkOption {
        type = types.str;
        default = "1h";
        description = "Random delay added to each scheduled backup.";
      };
      keep = mkOption {
        type = types.attrsOf types.int;
        default = { };
        example = { daily = 7; weekly = 4; monthly = 6; };
        description = "restic's forget policy (last, hourly, daily, weekly, monthly, yearly); empty: keep every snapshot.";
      };
      passwordFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/etc/tiffin/backup-password";
        description = ''
          The repository password (a secret from files/, say); null: made on the machine at the
          first run in /var/lib/tiffin/backup/password. Keeping a copy is the admin's job.
        '';
      };
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
        Deprecated: `build` with the host's own cache (`tiffin fleet publish --build`) gives this
        machine its prebuilt system, checked against the fleet's signature, without sharing the
        server's whole store.
        Substitute from the fleet server's Nix store over SSH (server: binaryCache.enable), with
        the same key and pinned host key. Needs serverCachePublicKey. The server's cache key then
        vouches for what this machine runs, whatever trustedKey says (see SECURITY.md), so with
        trustedKey it also needs serverCacheTrusted.
      '';
    };

    serverCacheTrusted = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Acknowledge that with useServerCache a compromised fleet server can give this machine any
        store path it builds, signed by the cache key, past trustedKey's protection.
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
    warnings = lib.optional cfg.useServerCache "services.tiffin.agent.useServerCache substitutes from the server's whole Nix store, which it shares with every host, signed by a key the server holds. Prefer `build` with each host's own cache (`tiffin fleet publish --build`), checked against the fleet's signature (SECURITY.md).";

    assertions = [
      {
        assertion = builtins.match "[a-z_][a-z0-9_-]{0,31}" cfg.host != null;
        message = "services.tiffin.agent.host = \"${cfg.host}\" must be this machine's name in fleet.toml: lower-case letters, digits, '-' and '_'.";
      }
      {
        assertion = cfg.source == null -> cfg.server != "";
        message = "services.tiffin.agent.server is not set: give the fleet server's name (fleet.toml's `server`), or a `file:///` source.";
      }
      {
        assertion = usesSftp -> cfg.serverHostKey != null;
        message = ''
          services.tiffin.agent.serverHostKey is not set: the agent pins the server's host key and refuses unknown ones.
          Set it to the server's /etc/ssh/ssh_host_ed25519_key.pub, e.g. from `ssh-keyscan -p ${toString (if endpoint == null then cfg.port else endpoint.port)} -t ed25519 ${serverName}`.'';
      }
      {
        assertion = cfg.source == null || tiffinLib.parseSftpSource cfg.source != null || lib.hasPrefix "file:///" cfg.source || usesHttp;
        message = "services.tiffin.agent.source = \"${toString cfg.source}\" is neither sftp://user@host:port/, https://host/path/ nor file:///path.";
      }
      {
        assertion = usesHttp -> cfg.trustedKey != null;
        message = "services.tiffin.agent.trustedKey is not set: an https:// source is a web server, an untrusted transport, and needs it (allowUnsigned does not apply).";
      }
      {
        assertion = cfg.httpCa == null || lib.hasPrefix "/" cfg.httpCa;
        message = "services.tiffin.agent.httpCa = \"${toString cfg.httpCa}\" must be an absolute path (a PEM file).";
      }
      {
        assertion = usesSftp -> (cfg.trustedKey != null || cfg.allowUnsigned);
        message = ''
          services.tiffin.agent.trustedKey is not set: an agent reading from a server refuses unsigned publications.
          Set trustedKey to the admin's public key file (`tiffin fleet keygen` prints it), or set allowUnsigned = true to let the server decide what this machine runs.'';
      }
      {
        assertion = cfg.trustedKey == null || lib.hasPrefix "/" cfg.trustedKey;
        message = "services.tiffin.agent.trustedKey = \"${toString cfg.trustedKey}\" must be an absolute path, e.g. /etc/tiffin/fleet-signing.pub.";
      }
      {
        assertion = !(lib.hasPrefix builtins.storeDir cfg.identityFile);
        message = "services.tiffin.agent.identityFile points into the Nix store, which everyone can read: use a path like /var/lib/tiffin/id_ed25519.";
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
        assertion = cfg.backup.enable -> (cfg.backup.paths != [ ] && !(lib.any (p: !lib.hasPrefix "/" p) cfg.backup.paths));
        message = "services.tiffin.agent.backup.paths must name at least one absolute path when backup.enable is set.";
      }
      {
        assertion = cfg.backup.passwordFile == null || !(lib.hasPrefix builtins.storeDir cfg.backup.passwordFile);
        message = "services.tiffin.agent.backup.passwordFile points into the Nix store, which everyone can read.";
      }
      {
        assertion = cfg.httpTrigger == "" || tiffinLib.isLoopbackTrigger cfg.httpTrigger;
        message = "services.tiffin.agent.httpTrigger = \"${cfg.httpTrigger}\" is not a loopback address like 127.0.0.1:9999 or [::1]:9999: anyone who reaches it can start updates (\"\" turns it off).";
      }
      {
        assertion = cfg.useServerCache -> (cfg.serverCachePublicKey != null && usesSftp);
        message = "services.tiffin.agent.useServerCache needs serverCachePublicKey (the server's binaryCache key) and an sftp source (server, port, serverHostKey).";
      }
      {
        assertion = (cfg.useServerCache && cfg.trustedKey != null) -> cfg.serverCacheTrusted;
        message = ''
          services.tiffin.agent.useServerCache with trustedKey: the server's binary cache can hand this machine any store path, signed by the server's own key, so a compromised server gets past trustedKey.
          Turn useServerCache off, or set serverCacheTrusted = true to accept that (SECURITY.md).'';
      }
    ] ++ lib.mapAttrsToList
      (name: value: {
        assertion = builtins.match durationRe value != null;
        message = "services.tiffin.agent.${name} = \"${value}\" is not a duration like \"15m\", \"60s\" or \"1h 30m\".";
      })
      durations;

    environment.systemPackages = [ cfg.package ];

    environment.etc."tiffin/agent.toml".source = agentTomlFile;
    # The same pin for server/port and for an explicit sftp:// source.
    environment.etc."tiffin/known_hosts" = lib.mkIf (knownHostsText != null) {
      text = knownHostsText;
      mode = "0644";
    };

    # StateDirectory creates it for the unit too; the rule also keeps its mode right for tools
    # run by hand before the first start. Nothing is created under /etc: it may be read-only.
    systemd.tmpfiles.rules = [ "d /var/lib/tiffin 0700 root root -" ];

    # Binds the trigger's port at boot, before any user could, and hands it to the agent
    # (LISTEN_FDS); the agent tells it apart by agent.toml's http_trigger, the same address.
    systemd.sockets.${triggerSocket} = lib.mkIf (cfg.httpTrigger != "") {
      description = "tiffin agent: the HTTP trigger's loopback port";
      wantedBy = [ "sockets.target" ];
      listenStreams = [ cfg.httpTrigger ];
      socketConfig = {
        Service = "tiffin-agent.service";
        FileDescriptorName = "http-trigger";
      };
    };

    systemd.services.tiffin-agent = {
      description = "tiffin agent: keeps this machine on its fleet configuration";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ] ++ triggerUnits;
      after = [ "network-online.target" "nix-daemon.socket" ] ++ triggerUnits;
      # A switch must not restart the agent, nor stop it when the new configuration has no agent:
      # it may be the process running that switch (docs/agent.md; NixOS's own upgrade service does
      # the same). The new agent starts at the next boot or `systemctl restart`.
      restartIfChanged = false;
      unitConfig.X-StopOnRemoval = false;
      # The builds and checks it runs (nix, git for flake inputs, ssh for ssh substituters).
      path = [ config.nix.package pkgs.gitMinimal ssh config.systemd.package ];
      # As nix-daemon's: the agent, as root, fetches with Nix's curl itself.
      environment = config.nix.envVars // {
        HOME = "/root";
        CURL_CA_BUNDLE = config.security.pki.caBundle;
      } // lib.optionalAttrs (config.environment.sessionVariables ? NIX_PATH) {
        # The non-flake build uses <nixpkgs/nixos>.
        inherit (config.environment.sessionVariables) NIX_PATH;
      } // config.networking.proxy.envVars;
      # Creates the host's key on the first start (or moves the one earlier versions created
      # under /etc); its .pub goes into fleet.toml.
      preStart =
        let
          key = lib.escapeShellArg cfg.identityFile;
          old = lib.escapeShellArg oldIdentity;
        in
        lib.optionalString (cfg.identityFile == defaultIdentity) ''
          if [ ! -e ${key} ] && [ -e ${old} ] && [ -e ${old}.pub ]; then
            mkdir -p "$(dirname ${key})"
            cp -p ${old} ${key}.tmp && cp -p ${old}.pub ${key}.pub && mv ${key}.tmp ${key}
            rm -f ${old} ${old}.pub || true
            echo "tiffin: moved the host key from ${oldIdentity} to ${cfg.identityFile}"
          fi
        '' + ''
          if [ ! -e ${key} ]; then
            mkdir -p "$(dirname ${key})"
            ${ssh}/bin/ssh-keygen -q -t ed25519 -N "" -C "root@${cfg.host}" -f ${key}
            echo "tiffin: created ${cfg.identityFile}; add this to [hosts.${cfg.host}] in fleet.toml:"
            echo "key = \"$(cat ${key}.pub)\""
          fi
        '';
      serviceConfig = tiffinLib.agentServiceConfig // {
        ExecStart = "${cfg.package}/bin/tiffin agent --config /etc/tiffin/agent.toml";
      } // lib.optionalAttrs (cfg.httpTrigger != "") {
        # Its fds whenever the agent starts, not only when a connection starts it.
        Sockets = "${triggerSocket}.socket";
      };
    };

    nix.settings = lib.mkIf (cfg.useServerCache && endpoint != null) {
      substituters = [ "ssh-ng://nix-ssh@${endpoint.server}?ssh-key=${cfg.identityFile}" ];
      trusted-public-keys = [ cfg.serverCachePublicKey ];
    };
    # nix-daemon's ssh reads the system-wide known hosts and config, not /etc/tiffin.
    programs.ssh = lib.mkIf (cfg.useServerCache && endpoint != null) {
      knownHosts.tiffin-server = {
        hostNames = [ "[${endpoint.server}]:${toString endpoint.port}" ] ++ lib.optional (endpoint.port == 22) endpoint.server;
        publicKey = cfg.serverHostKey;
      };
      extraConfig = lib.optionalString (endpoint.port != 22) ''
        Host ${endpoint.server}
          Port ${toString endpoint.port}
      '';
    };
  };
}
