# services.tiffin.server: the central SFTP server of a tiffin fleet (docs/publication.md, §7).
# fleet.toml is read with builtins.fromTOML, so the host keys live in one place: the admin's
# fleet repository. Each host gets a system user with a primary group of its own (which alone may
# read its publication), also in the shared group `tiffin`; its key in
# /etc/ssh/tiffin/authorized_keys/<user>; an sshd Match block (chroot, internal-sftp only, public
# key only, no forwarding; the blocks end with `Match All`) and its chroot directories. The text
# is made by ./lib.nix, which a test evaluates.
{ config, lib, pkgs, ... }:

let
  tiffinLib = import ./lib.nix;
  cfg = config.services.tiffin.server;
  fleetRaw = tiffinLib.readFleet cfg.fleetFile;
  # The chroot the module serves; fleet.toml's unless the admin overrides it (see the assertion).
  fleet = fleetRaw // {
    chroot = cfg.chrootDir;
    hosts = map (h: h // { chrootDir = "${cfg.chrootDir}/${h.name}"; }) fleetRaw.hosts;
  };
  # sshd refuses users whose shell does not exist; NixOS has no /usr/sbin/nologin.
  nologin = "${pkgs.shadow}/bin/nologin";
  hostUsers = tiffinLib.users { inherit fleet; shell = nologin; uids = cfg.uids; };
  userNames = map (h: h.user) fleet.hosts;

  # sshd's global allow/deny lists, which an admin may set for the server's own logins: each
  # would lock the hosts out without a word. (Read, not extended: the module cannot add to an
  # option whose being null or not it would itself decide.)
  sshd = config.services.openssh.settings;
  allowUsers = sshd.AllowUsers or null;
  allowGroups = sshd.AllowGroups or null;
  denyUsers = sshd.DenyUsers or null;
  denyGroups = sshd.DenyGroups or null;
  isMirror = cfg.role == "mirror";
  mirrorRoots = tiffinLib.mirrorRoots fleetRaw;
  permitRootLogin = sshd.PermitRootLogin or "prohibit-password";
  notAllowedUsers = if allowUsers == null then [ ] else lib.filter (u: !(builtins.elem u allowUsers)) userNames;
  deniedUsers = if denyUsers == null then [ ] else lib.filter (u: builtins.elem u denyUsers) userNames;
  deniedGroups = if denyGroups == null then [ ] else lib.filter (g: builtins.elem g denyGroups) ([ tiffinLib.hostGroup ] ++ userNames);

  # Other users of this system whose primary or supplementary group is a host's own group:
  # they could read that host's publication.
  groupSharers = lib.concatMap
    (h:
      let
        others = lib.filter (n: n != h.user) (
          lib.attrNames (lib.filterAttrs
            (_: u: u.group or "" == h.user || builtins.elem h.user (u.extraGroups or [ ]))
            config.users.users)
          ++ (config.users.groups.${h.user}.members or [ ]));
      in
      map (n: "user ${n} (in group ${h.user}, host ${h.name}'s own)") others)
    fleet.hosts;
in
{
  options.services.tiffin.server = {
    enable = lib.mkEnableOption "the tiffin fleet server (per-host SFTP chroots served by OpenSSH)";

    package = lib.mkOption {
      type = lib.types.package;
      default = pkgs.callPackage ../nix/package.nix { withTray = false; };
      defaultText = lib.literalMD "tiffin-headless (`packaging/nix/package.nix` without the tray)";
      description = "The tiffin package; the admin runs `tiffin fleet publish` from it.";
    };

    fleetFile = lib.mkOption {
      type = lib.types.path;
      example = lib.literalExpression "./fleet/fleet.toml";
      description = ''
        The fleet repository's fleet.toml. Its hosts become system users, sshd Match blocks and
        chroot directories. Give a path inside your configuration (it is read at evaluation time).
      '';
    };

    chrootDir = lib.mkOption {
      type = lib.types.str;
      default = fleetRaw.chroot;
      defaultText = lib.literalMD "`chroot` from fleetFile (`\"/srv/tiffin\"` when unset)";
      description = ''
        Root of the per-host chroots. Every component of it must be owned by root and not
        writable by group or others (sshd checks), so never under /tmp or a home directory.
      '';
    };

    uids = lib.mkOption {
      type = lib.types.attrsOf lib.types.int;
      default = { };
      example = { laptop = 401; };
      description = ''
        Fixed uids for host users (by user name), also the gid of each one's own group. Without one
        NixOS picks a free system uid; fix them when the chroots live on storage that outlives a
        reinstall.
      '';
    };

    maxStartups = lib.mkOption {
      type = lib.types.str;
      default = tiffinLib.maxStartups (builtins.length fleet.hosts);
      defaultText = lib.literalMD "`\"<start>:30:<full>\"` with start = max(10, number of hosts) and full = max(100, 2 × start)";
      description = ''
        sshd's MaxStartups. The default lets every host of the fleet be in its SSH handshake at
        the same time (after a server restart they all reconnect), never below sshd's 10:30:100.
      '';
    };

    role = lib.mkOption {
      type = lib.types.enum [ "primary" "mirror" ];
      default = "primary";
      description = ''
        `primary`: the server `tiffin fleet publish` writes to. `mirror`: a copy of it, named
        by a fleet.toml `[[mirrors]]` entry: the same users, chroots and sshd contract (hosts
        list it among their agent.toml `sources`), no publishing here; the publisher pushes as
        root with `mirror.publisherKeys`. Set `chrootDir` to the path of its `[[mirrors]] url`.
      '';
    };

    mirror = {
      publisherKeys = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = [ ];
        example = [ "ssh-ed25519 AAAA… root@fleet" ];
        description = ''
          The role `mirror`: the public key(s) of the `identity` the publisher's `[[mirrors]]`
          entry names, authorised for root here (SECURITY.md: that key is root on this mirror).
        '';
      };
      publisherFrom = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "192.0.2.10,2001:db8::10";
        description = "Where the publisher's key may log in from (`from=` of authorized_keys).";
      };
    };

    watch = {
      enable = lib.mkEnableOption ''
        `tiffin fleet watch` as a service: it follows the hosts' logs/ (inotify), advances staged
        rollouts (publishing promoted waves from fleetDir), runs alertCommand on every transition
        to failing, rolled back, stale, drifted or halted, and serves metrics'';
      fleetDir = lib.mkOption {
        type = lib.types.str;
        default = "";
        example = "/var/lib/tiffin/fleet";
        description = ''
          The fleet repository on this server (fleet.toml, hosts/, the signing key): the watcher
          reads it and publishes each promoted wave from it. A string: it must not be copied
          into the store.
        '';
      };
      alertCommand = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "mail -s tiffin admin@example.org";
        description = "Run through `sh -c` with each event as one JSON object on its stdin.";
      };
      metrics = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "127.0.0.1:9102";
        description = "Serve Prometheus metrics at http://ADDRESS/metrics (unauthenticated).";
      };
      soak = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "30m";
        description = "Overrides fleet.toml's `[rollout] soak`.";
      };
      advanceRollouts = lib.mkOption {
        type = lib.types.bool;
        default = true;
        description = "Promote and halt staged rollouts (false: only watch, alert and serve metrics).";
      };
    };

    binaryCache = {
      enable = lib.mkEnableOption ''
        (deprecated: `tiffin fleet publish --build` puts each host's own closure in its
        publication) offering this server's Nix store to the fleet's hosts as a binary cache over SSH
        (nix.sshServe, user nix-ssh, the same host keys). Agents opt in with useServerCache.
        Every host can then read every path of this store, and whoever controls this server can
        sign what the hosts substitute: see SECURITY.md'';
      secretKeyFile = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "/var/lib/nix-cache/secret-key";
        description = ''
          Key that signs what this server builds (`nix-store --generate-binary-cache-key`), so
          that hosts trust it. A string, not a path: it must not be copied into the store.
        '';
      };
    };
  };

  config = lib.mkIf cfg.enable {
    warnings = lib.optional cfg.binaryCache.enable "services.tiffin.server.binaryCache shares the whole Nix store with every host (nix.sshServe, one nix-ssh user) and signs it with a key on this server. Prefer each host's own cache in its publication (`tiffin fleet publish --build`), covered by the fleet's signature (SECURITY.md).";

    assertions = [
      {
        assertion = builtins.match "(/[A-Za-z0-9._+@-]+)+" cfg.chrootDir != null;
        message = "services.tiffin.server.chrootDir = \"${cfg.chrootDir}\" must be an absolute path of plain characters without a trailing '/', e.g. \"/srv/tiffin\".";
      }
      {
        assertion = !(lib.hasPrefix "/tmp/" cfg.chrootDir || lib.hasPrefix "/var/tmp/" cfg.chrootDir || lib.hasPrefix "/home/" cfg.chrootDir);
        message = "services.tiffin.server.chrootDir = \"${cfg.chrootDir}\": sshd refuses a chroot below a directory others can write to; use e.g. /srv/tiffin.";
      }
      {
        assertion = isMirror || cfg.chrootDir == fleetRaw.chroot;
        message = ''
          services.tiffin.server.chrootDir = "${cfg.chrootDir}" but ${toString cfg.fleetFile} says chroot = "${fleetRaw.chroot}".
          `tiffin fleet publish` writes where fleet.toml says, so sshd would serve empty directories: change one of them.'';
      }
      {
        assertion = !isMirror || builtins.elem cfg.chrootDir mirrorRoots;
        message = ''
          services.tiffin.server.role = "mirror" serves chrootDir = "${cfg.chrootDir}", but no sftp:// or rsync+ssh:// [[mirrors]] url of ${toString cfg.fleetFile} pushes there (their paths: ${builtins.toJSON mirrorRoots}).
          Set chrootDir to the path of this mirror's url, or add the mirror to fleet.toml.'';
      }
      {
        assertion = !isMirror || cfg.mirror.publisherKeys != [ ];
        message = "services.tiffin.server.role = \"mirror\" needs mirror.publisherKeys: the public key of the `identity` fleet.toml's [[mirrors]] entry pushes with (as root).";
      }
      {
        assertion = !isMirror || builtins.elem permitRootLogin [ "prohibit-password" "without-password" "yes" ];
        message = "services.tiffin.server.role = \"mirror\": services.openssh.settings.PermitRootLogin = \"${toString permitRootLogin}\" keeps the publisher out; the push logs in as root with its key (\"prohibit-password\").";
      }
      {
        assertion = !isMirror || ((allowUsers == null || builtins.elem "root" allowUsers) && (allowGroups == null || builtins.elem "root" allowGroups));
        message = "services.tiffin.server.role = \"mirror\": services.openssh.settings.AllowUsers/AllowGroups is set without \"root\": the publisher's push (root) would be refused.";
      }
      {
        assertion = !(isMirror && cfg.watch.enable);
        message = "services.tiffin.server.role = \"mirror\" with watch.enable: a mirror publishes nothing; run `tiffin fleet watch` on the primary.";
      }
      {
        assertion = fleet.hosts != [ ];
        message = "services.tiffin.server: ${toString cfg.fleetFile} has no [hosts.<name>] yet; add one with the host's SSH public key (`tiffin fleet init` writes an example).";
      }
      {
        assertion = notAllowedUsers == [ ];
        message = "services.openssh.settings.AllowUsers is set but lacks the host users ${builtins.toJSON notAllowedUsers}: sshd would refuse those hosts. Add them to AllowUsers (the fleet's users are ${builtins.toJSON userNames}).";
      }
      {
        assertion = allowGroups == null || builtins.elem tiffinLib.hostGroup allowGroups;
        message = "services.openssh.settings.AllowGroups is set but lacks \"${tiffinLib.hostGroup}\", the group every host user is in: sshd would refuse all hosts. Add \"${tiffinLib.hostGroup}\" to AllowGroups.";
      }
      {
        assertion = deniedUsers == [ ] && deniedGroups == [ ];
        message = "services.openssh.settings.DenyUsers or DenyGroups names ${builtins.toJSON (deniedUsers ++ deniedGroups)}, a host user or its group: sshd would refuse those hosts.";
      }
      {
        assertion = groupSharers == [ ];
        message = "services.tiffin.server: ${lib.concatStringsSep ", " groupSharers} would read that host's publication: each host user's primary group must be its own.";
      }
      {
        assertion = cfg.watch.enable -> builtins.match "/.*" cfg.watch.fleetDir != null;
        message = "services.tiffin.server.watch.fleetDir = \"${cfg.watch.fleetDir}\" must be the absolute path of the fleet repository on this server (fleet.toml, hosts/, the signing key).";
      }
      {
        assertion = cfg.binaryCache.enable -> cfg.binaryCache.secretKeyFile != null;
        message = "services.tiffin.server.binaryCache.enable needs binaryCache.secretKeyFile: hosts only substitute paths signed by a key they trust.";
      }
      {
        assertion = cfg.binaryCache.secretKeyFile == null || !(lib.hasPrefix builtins.storeDir cfg.binaryCache.secretKeyFile);
        message = "services.tiffin.server.binaryCache.secretKeyFile points into the Nix store, which everyone can read: keep the key outside it.";
      }
    ];

    # A mirror also receives rsync+ssh:// pushes.
    environment.systemPackages = [ cfg.package ] ++ lib.optional isMirror pkgs.rsync;

    users.groups = tiffinLib.groups { inherit fleet; uids = cfg.uids; };
    users.users = lib.mapAttrs (_: u: builtins.removeAttrs u [ "keys" ]) hostUsers
      // lib.optionalAttrs isMirror {
      root.openssh.authorizedKeys.keys =
        tiffinLib.mirrorRootKeys { keys = cfg.mirror.publisherKeys; from = cfg.mirror.publisherFrom; };
    };

    environment.etc = tiffinLib.authorizedKeysFiles fleet;

    services.openssh = {
      enable = true;
      settings.MaxStartups = lib.mkDefault cfg.maxStartups;
      # Match blocks must come after every global setting; NixOS appends extraConfig after the
      # settings, and this after other modules' mkAfter text (which so stays global). The blocks
      # end with `Match All`, so text placed even later applies to every connection again.
      extraConfig = lib.mkOrder 2000 ("\n" + tiffinLib.sshdMatchBlocks fleet);
    };

    systemd.tmpfiles.rules = tiffinLib.tmpfilesRules fleet;

    systemd.services = lib.optionalAttrs cfg.watch.enable {
      tiffin-fleet-watch = {
        description = "tiffin fleet watcher: staged rollouts, alerts, metrics";
        wantedBy = [ "multi-user.target" ];
        after = [ "network.target" ];
        serviceConfig = {
          # Root: it reads every host's logs/ (each its host user's, 0700) and publishes.
          ExecStart = tiffinLib.watchCommand {
            bin = "${cfg.package}/bin/tiffin";
            inherit (cfg.watch) fleetDir alertCommand metrics soak;
            advance = cfg.watch.advanceRollouts;
          };
          Restart = "always";
          RestartSec = 10;
        };
      };
    };

    nix = lib.mkIf cfg.binaryCache.enable {
      sshServe = {
        enable = true;
        protocol = "ssh-ng";
        keys = map (h: h.key) fleet.hosts;
      };
      settings.secret-key-files = [ cfg.binaryCache.secretKeyFile ];
    };
  };
}
