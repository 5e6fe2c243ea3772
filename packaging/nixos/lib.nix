# The plain functions behind the NixOS modules: fleet.toml → server users, sshd text and chroot
# directories; module options → agent.toml and known_hosts. They use builtins only (no nixpkgs),
# so tests/packaging.rs evaluates exactly this code with a bare `nix-instantiate`.
#
# The sshd text follows the contract that `tiffin fleet sshd-config` prints too: one Match block
# per host, users in the group `tiffin`, keys in /etc/ssh/tiffin/authorized_keys/<user>.
let
  inherit (builtins)
    attrNames
    concatStringsSep
    elem
    filter
    head
    isAttrs
    isBool
    isInt
    isList
    isString
    length
    listToAttrs
    map
    match
    toJSON
    typeOf
    ;

  fail = where: what: throw "tiffin: ${where}: ${what}";
  max = a: b: if a > b then a else b;

  # The same rules as the Rust parser (src/config/fleet.rs), so that a fleet the admin's
  # `tiffin fleet publish` accepts is also one the server module accepts, and vice versa.
  fleetKeys = [ "chroot" "server" "port" "keep_generations" "hosts" ];
  hostKeys = [ "key" "dir" "attr" "user" ];
  keyTypes = "ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521|sk-ssh-ed25519@openssh\\.com";
  # One line only: a newline in a key would add lines to an authorized_keys file.
  publicKeyRe = "(${keyTypes})[ \t]+[A-Za-z0-9+/]+={0,2}([ \t][^\n\r]*)?";
  unixNameRe = "[a-z_][a-z0-9_-]{0,31}";
  # sshd splits its config on white space and treats '#' and '"' specially: keep paths plain.
  plainAbsPathRe = "(/[A-Za-z0-9._+@-]+)+/?";

  checkKnownKeys = where: known: attrs:
    let unknown = filter (k: !elem k known) (attrNames attrs);
    in
    if unknown == [ ] then attrs
    else fail where "unknown key ${toJSON (head unknown)} (known keys: ${concatStringsSep ", " known})";

  checkString = where: v:
    if isString v then v else fail where "expected a string, found ${typeOf v}";

  checkUnixName = where: name:
    if match unixNameRe (checkString where name) != null then name
    else fail where "${toJSON name} is not usable as a Unix user name and directory: use lower-case letters, digits, '-' and '_', starting with a letter, at most 32 characters";

  checkPublicKey = where: key:
    if match publicKeyRe (checkString where key) != null then key
    else fail where "${toJSON key} is not an SSH public key line like \"ssh-ed25519 AAAA… root@host\"";

  # "/srv/tiffin/" → "/srv/tiffin"
  stripSlash = p: let m = match "(.*[^/])/" p; in if m == null then p else head m;

  checkChroot = where: p:
    if match plainAbsPathRe (checkString where p) != null then stripSlash p
    else fail where "${toJSON p} must be an absolute path of plain characters (letters, digits, '._+@-'), e.g. \"/srv/tiffin\"";

  renderValue = where: v:
    if isString v then toJSON v # JSON string escapes are valid TOML basic-string escapes
    else if isBool v then (if v then "true" else "false")
    else if isInt v then toString v
    else if isList v then "[" + concatStringsSep ", " (map (renderValue where) v) + "]"
    else fail where "cannot write a ${typeOf v} into agent.toml";

  # agent.toml's keys in the order of DESIGN §10.
  agentKeyOrder = [
    "host" "source" "identity" "known_hosts" "state_dir" "socket" "socket_group" "admin_group"
    "interval" "jitter" "policy" "deadline" "operation" "verify_timeout" "health_checks"
    "http_trigger" "trusted_key"
  ];
  systemKeyOrder = [ "nix" "nix_build" "nix_env" "systemd_run" "profile" "current_system" "booted_system" ];
in
rec {
  /* Reads and checks fleet.toml: the server module's one source of truth for host keys. */
  readFleet = fleetFile: checkFleetFrom (toString fleetFile) (builtins.fromTOML (builtins.readFile fleetFile));

  /* Checks a parsed fleet (unknown keys, host and user names, keys, duplicate users) and fills
     in the defaults of DESIGN §10. */
  checkFleet = checkFleetFrom "fleet.toml";

  /* checkFleet, naming `origin` (the file) in errors. */
  checkFleetFrom = origin: fleet:
    let
      checked = checkKnownKeys origin fleetKeys fleet;
      hosts = checked.hosts or { };
      chroot = checkChroot "${origin}: chroot" (checked.chroot or "/srv/tiffin");
      hostList = map
        (name:
          let
            where = "${origin}: [hosts.${name}]";
            h = checkKnownKeys where hostKeys (if isAttrs hosts.${name} then hosts.${name}
              else fail where "expected a table with key = \"ssh-ed25519 …\"");
          in
          {
            name = checkUnixName where name;
            user = if h ? user then checkUnixName "${where}: user" h.user else checkUnixName where name;
            key = checkPublicKey "${where}: key" (h.key or (fail where "key is missing: the host's SSH public key"));
            chrootDir = "${chroot}/${name}";
          })
        (attrNames hosts); # attrNames is sorted: the output is stable
      users = map (h: h.user) hostList;
      duplicate = filter (u: length (filter (x: x == u) users) > 1) users;
    in
    if duplicate != [ ] then fail origin "two hosts use the user ${toJSON (head duplicate)}; each host needs its own user"
    else {
      inherit chroot;
      server = checked.server or "";
      port = checked.port or 22;
      hosts = hostList;
    };

  /* One system user per host, for `users.users`:
     { <user> = { group = "tiffin"; isSystemUser; home; shell; hashedPassword = "*"; keys; uid?; } }.
     `keys` is not a users.users option: the server module writes it to authorizedKeysFiles.
     The password is `*`, not the locked `!`, which sshd refuses under `UsePAM no`.
     sshd refuses a user whose shell does not exist, so NixOS passes its own nologin path. */
  users = { fleet, shell ? "/usr/sbin/nologin", home ? "/var/empty", uids ? { } }:
    listToAttrs (map
      (h: {
        name = h.user;
        value = {
          group = "tiffin";
          isSystemUser = true;
          inherit home shell;
          hashedPassword = "*";
          keys = [ h.key ];
        } // (if uids ? ${h.user} then { uid = uids.${h.user}; } else { });
      })
      fleet.hosts);

  /* `environment.etc` entries: /etc/ssh/tiffin/authorized_keys/<user>, root-owned 0644. A mode
     makes NixOS copy the file instead of linking into /nix/store, whose group-writable
     directory sshd's StrictModes would refuse. */
  authorizedKeysFiles = fleet:
    listToAttrs (map
      (h: {
        name = "ssh/tiffin/authorized_keys/${h.user}";
        value = { mode = "0644"; user = "root"; group = "root"; text = h.key + "\n"; };
      })
      fleet.hosts);

  /* One sshd Match block per host, separated by an empty line. */
  sshdMatchBlocks = fleet: concatStringsSep "\n" (map matchBlock fleet.hosts);

  matchBlock = h: concatStringsSep "\n" [
    "Match User ${h.user}"
    "    ChrootDirectory ${h.chrootDir}"
    "    ForceCommand internal-sftp"
    "    AuthorizedKeysFile /etc/ssh/tiffin/authorized_keys/%u"
    "    PasswordAuthentication no"
    "    KbdInteractiveAuthentication no"
    "    AllowTcpForwarding no"
    "    AllowAgentForwarding no"
    "    AllowStreamLocalForwarding no"
    "    PermitTunnel no"
    "    X11Forwarding no"
    "    PermitTTY no"
  ] + "\n";

  /* sshd's MaxStartups "start:rate:full" for a fleet of n hosts: up to `start` unauthenticated
     connections are never dropped, so every host may be in its handshake at once (after a
     server restart they all reconnect); sshd's own default 10:30:100 is the floor. */
  maxStartups = n:
    let start = max 10 n;
    in "${toString start}:30:${toString (max 100 (2 * start))}";

  /* systemd.tmpfiles rules for the publication layout (DESIGN §2): every chroot component
     root-owned 0755 (sshd demands it); logs/ the only place a host may write. */
  tmpfilesRules = fleet:
    [ "d ${fleet.chroot} 0755 root root -" ]
    ++ builtins.concatMap
      (h: [
        "d ${h.chrootDir} 0755 root root -"
        "d ${h.chrootDir}/gens 0755 root root -"
        "d ${h.chrootDir}/logs 0700 ${h.user} tiffin -"
      ])
      fleet.hosts;

  /* The agent's known_hosts: the server's pinned host key as "[server]:port type key". */
  knownHosts = { server, port ? 22, serverHostKey }:
    let
      m = match "([^ \t]+)[ \t]+([^ \t]+).*" (checkPublicKey "services.tiffin.agent.serverHostKey" serverHostKey);
    in
    if match "[A-Za-z0-9.:-]+" server == null
    then fail "services.tiffin.agent.server" "${toJSON server} is not a host name or address"
    else "[${server}]:${toString port} ${builtins.elemAt m 0} ${builtins.elemAt m 1}\n";

  /* The settings of agent.toml (its TOML key names) from the agent module's option names.
     Missing options get the documented defaults, so the test can pass a few. */
  agentSettings = o:
    let
      user = o.user or null;
      port = o.port or 22;
      source =
        if (o.source or null) != null then o.source
        else if (o.server or "") == "" then fail "services.tiffin.agent" "set server (or source)"
        else "sftp://${if user != null then user else o.host}@${o.server}:${toString port}/";
      trusted = o.trustedKey or null;
    in
    {
      host = checkUnixName "services.tiffin.agent.host" (o.host or (fail "services.tiffin.agent" "host is missing"));
      inherit source;
      identity = o.identityFile or "/etc/tiffin/id_ed25519";
      known_hosts = o.knownHostsFile or "/etc/tiffin/known_hosts";
      state_dir = o.stateDir or "/var/lib/tiffin";
      socket = o.socket or "/run/tiffin/agent.sock";
      socket_group = o.socketGroup or "users";
      admin_group = o.adminGroup or "wheel";
      interval = o.interval or "15m";
      jitter = o.jitter or "2m";
      policy = o.policy or "auto";
      deadline = o.deadline or "24h";
      operation = o.operation or "switch";
      verify_timeout = o.verifyTimeout or "60s";
      health_checks = o.healthChecks or [ ];
      http_trigger = o.httpTrigger or "127.0.0.1:9999";
      trusted_key = if trusted == null then "" else toString trusted;
      system = o.system or { };
    };

  /* agent.toml's text from the agent module's option names (see agentSettings). */
  agentToml = o:
    let
      s = agentSettings o;
      line = k: v: "${k} = ${renderValue "agent.toml: ${k}" v}\n";
      system = checkKnownKeys "agent.toml: [system]" systemKeyOrder s.system;
      systemKeys = filter (k: system ? ${k}) systemKeyOrder;
    in
    concatStringsSep "" (map (k: line k s.${k}) agentKeyOrder)
    + (if systemKeys == [ ] then ""
    else "\n[system]\n" + concatStringsSep "" (map (k: line k system.${k}) systemKeys));

  /* The agent unit's settings shared by the NixOS module and packaging/systemd/tiffin-agent.service
     (a test checks that the unit file carries every one of them).
     Activation (switch-to-configuration) rewrites /etc, /boot, the setuid wrappers, sysctls, the
     hostname and users' homes, and runs inside this unit when [system] systemd_run is "". So
     no ProtectSystem, ProtectHome, ProtectKernel*, ProtectHostname, ProtectClock,
     RestrictSUIDSGID, NoNewPrivileges or CapabilityBoundingSet: each would break some activation.
     What is left costs activation nothing. */
  agentServiceConfig = {
    Type = "notify";
    NotifyAccess = "main";
    Restart = "on-failure";
    RestartSec = "10s";
    # /run/tiffin holds the socket (0660, socket group); members need to enter the directory.
    RuntimeDirectory = "tiffin";
    RuntimeDirectoryMode = "0755";
    StateDirectory = "tiffin";
    StateDirectoryMode = "0700";
    # Staging lives in the state dir, not /tmp; a private /tmp hides nothing activation needs.
    PrivateTmp = true;
    LockPersonality = true;
    RestrictRealtime = true;
    SystemCallArchitectures = "native";
  };
}
