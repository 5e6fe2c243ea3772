# The plain functions behind the NixOS modules: fleet.toml → server users, sshd text and chroot
# directories; module options → agent.toml and known_hosts. They use builtins only (no nixpkgs),
# so tests/packaging.rs evaluates exactly this code with a bare `nix-instantiate`.
#
# The sshd text follows the contract that `tiffin fleet sshd-config` prints too: one Match block
# per host, closed by `Match All`; each host's user has a primary group of its own (which alone may
# read its publication) and is also in the shared group `tiffin`; keys in
# /etc/ssh/tiffin/authorized_keys/<user>.
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
    stringLength
    substring
    toJSON
    typeOf
    ;

  fail = where: what: throw "tiffin: ${where}: ${what}";
  hostGroup = "tiffin";
  max = a: b: if a > b then a else b;

  # The same rules as the Rust parser (src/config/fleet.rs), so that a fleet the admin's
  # `tiffin fleet publish` accepts is also one the server module accepts, and vice versa.
  fleetKeys = [ "chroot" "server" "port" "keep_generations" "signing_key" "never_publish" "build" "hosts" "secrets" "rollout" "mirrors" ]
    ++ [ "http" ];  # [http] root: the web root (docs/serving.md)
  mirrorKeys = [ "url" "identity" "known_hosts" ];
  # A mirror's chroot root, from its `[[mirrors]] url` (sftp:// or rsync+ssh://; s3:// has none).
  mirrorUrlRe = "(sftp|rsync\\+ssh)://[^/@]+@[^/]+(/[A-Za-z0-9._+@/-]*)";
  hostKeys = [ "key" "dir" "attr" "user" "backup_quota" "wave" ]
    ++ [ "http_prefix" ];
  keyTypes = "ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521|sk-ssh-ed25519@openssh\\.com";
  # One line, starting with the key type: no options (`command="…" ssh-ed25519 …`), and no
  # newline or other control character in the comment (a newline would add a line, with options
  # of its own, to an authorized_keys file).
  publicKeyRe = "(${keyTypes})[ \t]+([A-Za-z0-9+/]+={0,2})([ \t]([^[:cntrl:]]|\t)*)?";
  # The key data starts with a length-prefixed copy of its type: these are the base64 characters
  # that encode whole bytes of that prefix (the Rust parser decodes and compares the same thing).
  blobPrefixes = {
    "ssh-ed25519" = "AAAAC3NzaC1lZDI1NTE5";
    "ssh-rsa" = "AAAAB3NzaC1y";
    "ecdsa-sha2-nistp256" = "AAAAE2VjZHNhLXNoYTItbmlzdHAy";
    "ecdsa-sha2-nistp384" = "AAAAE2VjZHNhLXNoYTItbmlzdHAz";
    "ecdsa-sha2-nistp521" = "AAAAE2VjZHNhLXNoYTItbmlzdHA1";
    "sk-ssh-ed25519@openssh.com" = "AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29t";
  };
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
    let
      m = match publicKeyRe (checkString where key);
      type = builtins.elemAt m 0;
      blob = builtins.elemAt m 1;
      prefix = blobPrefixes.${type};
    in
    if m == null then
      fail where "${toJSON key} is not an SSH public key line like \"ssh-ed25519 AAAA… root@host\" (one line, the key type first: no options, no newline or control character)"
    else if substring 0 (stringLength prefix) blob != prefix || stringLength blob - (stringLength blob / 4) * 4 != 0 then
      fail where "${toJSON key}: the key data does not hold a ${type} key (or is not base64)"
    else key;

  # "0080" → "80" (fromJSON refuses leading zeros)
  trimZeros = d: let m = match "0*([0-9]+)" d; in if m == null then d else head m;
  # "/srv/tiffin/" → "/srv/tiffin"
  stripSlash = p: let m = match "(.*[^/])/" p; in if m == null then p else head m;

  checkChroot = where: p:
    if match plainAbsPathRe (checkString where p) == null then
      fail where "${toJSON p} must be an absolute path of plain characters (letters, digits, '._+@-'), e.g. \"/srv/tiffin\""
    # sshd checks the ownership of each component as written: "." and ".." would check others.
    else if match "(.*/)?[.][.]?(/.*)?" p != null then
      fail where "${toJSON p} must not contain \".\" or \"..\" components"
    else stripSlash p;

  renderValue = where: v:
    if isString v then toJSON v # JSON string escapes are valid TOML basic-string escapes
    else if isBool v then (if v then "true" else "false")
    else if isInt v then toString v
    else if isList v then "[" + concatStringsSep ", " (map (renderValue where) v) + "]"
    else fail where "cannot write a ${typeOf v} into agent.toml";

  # agent.toml's keys in the order of docs/configuration.md.
  agentKeyOrder = [
    "host" "source" "sources" "report_to" "identity" "known_hosts" "state_dir" "socket" "socket_group" "admin_group"
    "interval" "jitter" "policy" "deadline" "operation" "verify_timeout" "health_checks"
    "http_trigger" "trusted_key" "allow_unsigned" "max_age" "build_timeout" "activate_timeout"
    "build"
  ] ++ [ "http_ca" ];
  # [backup] (docs/backup.md) and its forget policy, in the order of docs/configuration.md.
  backupKeyOrder = [ "paths" "exclude" "schedule" "jitter" "password_file" "restic" "timeout" ];
  keepKeyOrder = [ "last" "hourly" "daily" "weekly" "monthly" "yearly" ];
  # The agent module's backup options (camelCase) as [backup]'s keys; null: not written.
  backupSettings = b: {
    paths = b.paths or (fail "services.tiffin.agent.backup" "paths is missing");
    exclude = b.exclude or [ ];
    schedule = b.schedule or "daily";
    jitter = b.jitter or "1h";
    password_file = b.passwordFile or null;
    restic = b.restic or null;
    timeout = b.timeout or null;
  };
  # "\n[backup]\n…" (and "[backup.keep]"), or "" without backups.
  backupToml = line: b:
    if b == null then ""
    else
      let
        s = backupSettings b;
        keep = checkKnownKeys "services.tiffin.agent.backup.keep" keepKeyOrder (b.keep or { });
        keepKeys = filter (k: keep ? ${k}) keepKeyOrder;
      in
      "\n[backup]\n" + concatStringsSep "" (map (k: line k s.${k}) (filter (k: s.${k} != null) backupKeyOrder))
      + (if keepKeys == [ ] then "" else "\n[backup.keep]\n" + concatStringsSep "" (map (k: line k keep.${k}) keepKeys));
  systemKeyOrder = [ "nix" "nix_build" "nix_env" "systemd_run" "profile" "current_system" "booted_system" "nix_store" ];
in
rec {
  /* Reads and checks fleet.toml: the server module's one source of truth for host keys. */
  readFleet = fleetFile: checkFleetFrom (toString fleetFile) (builtins.fromTOML (builtins.readFile fleetFile));

  /* Checks a parsed fleet (unknown keys, host and user names, keys, duplicate users) and fills
     in the defaults of docs/configuration.md. */
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
      mirrors = map
        (m:
          let where = "${origin}: [[mirrors]]";
          in checkKnownKeys where mirrorKeys (if isAttrs m && m ? url then m
          else fail where "expected a table with url = \"sftp://root@mirror:22/srv/tiffin\""))
        (checked.mirrors or [ ]);
      users = map (h: h.user) hostList;
      duplicate = filter (u: length (filter (x: x == u) users) > 1) users;
    in
    if duplicate != [ ] then fail origin "two hosts use the user ${toJSON (head duplicate)}; each host needs its own user"
    # A host user's primary group has its name: "tiffin" would be the group every host is in.
    else if elem hostGroup users then fail origin "a host uses the user ${toJSON hostGroup}, the name of the group all host users share; give it another `user`"
    else {
      inherit chroot;
      server = checked.server or "";
      port = checked.port or 22;
      hosts = hostList;
      inherit mirrors;
    };

  /* The chroot roots of the fleet's sftp:// and rsync+ssh:// mirrors (what a server in the
     mirror role may serve), trailing slash dropped. */
  mirrorRoots = fleet:
    builtins.concatMap
      (m:
        let u = match mirrorUrlRe (checkString "[[mirrors]] url" m.url);
        in if u == null then [ ] else [ (stripSlash (builtins.elemAt u 1)) ])
      (fleet.mirrors or [ ]);

  /* root's authorized_keys lines on a mirror: the publisher's keys (checked like host keys),
     each limited to `from` (an sshd pattern list such as "192.0.2.10,2001:db8::10") when
     given, and to no forwarding or terminal. */
  mirrorRootKeys = { keys, from ? null }:
    let
      plainFrom = f: if match "[A-Za-z0-9.:*?!,/_-]+" f != null then f
        else fail "services.tiffin.server.mirror.publisherFrom" "${toJSON f} is not a plain sshd pattern list like \"192.0.2.10,2001:db8::10\"";
      opts = (if from == null then "" else "from=\"${plainFrom from}\",")
        + "no-port-forwarding,no-agent-forwarding,no-X11-forwarding,no-pty";
    in
    map (k: "${opts} ${checkPublicKey "services.tiffin.server.mirror.publisherKeys" k}") keys;

  /* The group all host users are in (as a supplementary group). */
  inherit hostGroup;

  /* One system user per host, for `users.users`:
     { <user> = { group = <user>; extraGroups = [ "tiffin" ]; isSystemUser; home; shell;
     hashedPassword = "*"; keys; uid?; } }.
     The primary group is the user's own (as `useradd --user-group` makes it): `tiffin fleet
     publish` gives a host's publication to that group, so no other host user can read it.
     `keys` is not a users.users option: the server module writes it to authorizedKeysFiles.
     The password is `*`, not the locked `!`, which sshd refuses under `UsePAM no`.
     sshd refuses a user whose shell does not exist, so NixOS passes its own nologin path. */
  users = { fleet, shell ? "/usr/sbin/nologin", home ? "/var/empty", uids ? { } }:
    listToAttrs (map
      (h: {
        name = h.user;
        value = {
          group = h.user;
          extraGroups = [ hostGroup ];
          isSystemUser = true;
          inherit home shell;
          hashedPassword = "*";
          keys = [ h.key ];
        } // (if uids ? ${h.user} then { uid = uids.${h.user}; } else { });
      })
      fleet.hosts);

  /* The groups for `users.groups`: the shared `tiffin` and one per host user, with the user's
     fixed uid as its gid when `uids` gives one. */
  groups = { fleet, uids ? { } }:
    { ${hostGroup} = { }; }
    // listToAttrs (map
      (h: {
        name = h.user;
        value = if uids ? ${h.user} then { gid = uids.${h.user}; } else { };
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

  /* One sshd Match block per host, separated by an empty line, then `Match All`: whatever
     sshd_config says after the blocks (another module's text) applies to every connection again,
     not to the last host only. */
  sshdMatchBlocks = fleet: concatStringsSep "\n" (map matchBlock fleet.hosts) + "\nMatch All\n";

  matchBlock = h: concatStringsSep "\n" [
    "Match User ${h.user}"
    "    ChrootDirectory ${h.chrootDir}"
    "    ForceCommand internal-sftp"
    "    AuthorizedKeysFile /etc/ssh/tiffin/authorized_keys/%u"
    "    AuthenticationMethods publickey"
    "    PasswordAuthentication no"
    "    KbdInteractiveAuthentication no"
    "    DisableForwarding yes"
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

  /* systemd.tmpfiles rules for the publication layout (docs/publication.md): every chroot component
     root-owned 0755 (sshd demands it); logs/ and backup/ the only places a host may write. */
  tmpfilesRules = fleet:
    [ "d ${fleet.chroot} 0755 root root -" ]
    ++ builtins.concatMap
      (h: [
        "d ${h.chrootDir} 0755 root root -"
        "d ${h.chrootDir}/gens 0755 root root -"
        "d ${h.chrootDir}/logs 0700 ${h.user} ${h.user} -"
        "d ${h.chrootDir}/backup 0700 ${h.user} ${h.user} -"
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

  /* An `sftp://user@host:port/path` source as { user; server; port; }, the same parts the agent
     reads (`[v6]` hosts, port 22 when none); null for anything else. */
  parseSftpSource = source:
    let
      m = match "sftp://([^@/]+)@([[]([0-9A-Fa-f:.]+)[]]|([^]:/[]+))(:([0-9]{1,5}))?(/.*)?" source;
      port = if m == null || builtins.elemAt m 5 == null then 22 else builtins.fromJSON (trimZeros (builtins.elemAt m 5));
    in
    if m == null || port < 1 || port > 65535 then null
    else {
      user = builtins.elemAt m 0;
      server = if builtins.elemAt m 2 != null then builtins.elemAt m 2 else builtins.elemAt m 3;
      inherit port;
    };

  /* Where the agent logs in, from the agent module's options: { user; server; port; } from an
     explicit sftp:// `source`, else from user/server/port; null for a file:/// source (which needs
     no server, key or known_hosts) and for a source that is neither (the module asserts). */
  agentEndpoint = o:
    let
      source = o.source or null;
      user = o.user or null;
    in
    if source == null then {
      user = if user != null then user else o.host or (fail "services.tiffin.agent" "host is missing");
      server = o.server or "";
      port = o.port or 22;
    }
    else parseSftpSource source;

  /* The agent's known_hosts text for its options, or null when it needs none (file:/// source) or
     has no serverHostKey yet (the module asserts on that). The same pin for an explicit sftp://
     source as for server/port. */
  agentKnownHosts = o:
    let e = agentEndpoint o;
    in
    if e == null || (o.serverHostKey or null) == null then null
    else knownHosts { inherit (e) server port; serverHostKey = o.serverHostKey; };

  /* True for an HTTP trigger address the agent may listen on: a loopback address with a port,
     `127.x.y.z:port` or `[::1]:port`. The trigger starts updates for whoever can connect, so it
     must never be reachable from the network. */
  isLoopbackTrigger = addr:
    let
      v4 = match "127[.]([0-9]{1,3})[.]([0-9]{1,3})[.]([0-9]{1,3}):([0-9]{1,5})" addr;
      v6 = match "[[]::1[]]:([0-9]{1,5})" addr;
      num = s: builtins.fromJSON (trimZeros s);
      portOk = s: num s >= 1 && num s <= 65535;
      byteOk = s: num s <= 255;
    in
    if v4 != null then byteOk (builtins.elemAt v4 0) && byteOk (builtins.elemAt v4 1) && byteOk (builtins.elemAt v4 2) && portOk (builtins.elemAt v4 3)
    else if v6 != null then portOk (builtins.elemAt v6 0)
    else false;

  /* The settings of agent.toml (its TOML key names) from the agent module's option names.
     Missing options get the documented defaults, so the test can pass a few. A null value is
     not written (the agent's own default, or a key an older agent does not know). */
  agentSettings = o:
    let
      e = agentEndpoint o;
      source =
        if (o.source or null) != null then o.source
        else if e.server == "" then fail "services.tiffin.agent" "set server (or source)"
        else "sftp://${e.user}@${e.server}:${toString e.port}/";
      trusted = o.trustedKey or null;
    in
    {
      host = checkUnixName "services.tiffin.agent.host" (o.host or (fail "services.tiffin.agent" "host is missing"));
      # `sources` (several, in order) replaces `source`; agent.toml takes exactly one of the two.
      source = if (o.sources or [ ]) != [ ] then null else source;
      sources = if (o.sources or [ ]) != [ ] then o.sources else null;
      report_to = o.reportTo or null;
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
      # Written only when true: the admin said so (the module asserts on it for sftp sources).
      allow_unsigned = if o.allowUnsigned or false then true else null;
      max_age = o.maxAge or null;
      # An https:// source's pinned CA (PEM file); null: the system's roots.
      http_ca = o.httpCa or null;
      build_timeout = o.buildTimeout or null;
      activate_timeout = o.activateTimeout or null;
      build = o.build or null;
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
    concatStringsSep "" (map (k: line k s.${k}) (filter (k: s.${k} != null) agentKeyOrder))
    + (if systemKeys == [ ] then ""
    else "\n[system]\n" + concatStringsSep "" (map (k: line k system.${k}) systemKeys))
    + backupToml line (o.backup or null);

  /* The agent unit's settings shared by the NixOS module and packaging/systemd/tiffin-agent.service
     (a test checks that the unit file carries every one of them).
     Activation (switch-to-configuration) rewrites /etc, /boot, the setuid wrappers, sysctls, the
     hostname and users' homes, and runs inside this unit when [system] systemd_run is "". So
     no ProtectSystem, ProtectHome, ProtectKernel*, ProtectHostname, ProtectClock,
     RestrictSUIDSGID, NoNewPrivileges or CapabilityBoundingSet: each would break some activation.
     What is left costs activation nothing. */
  /* The command line of `tiffin fleet watch` for the server module's unit (`bin` is the tiffin
     binary): each argument quoted for the shell systemd's ExecStart is parsed like. */
  watchCommand = { bin, fleetDir, alertCommand ? null, metrics ? null, soak ? null, advance ? true }:
    let
      quote = a: "'" + builtins.replaceStrings [ "'" ] [ "'\\''" ] a + "'";
      args = [ "fleet" "--fleet" fleetDir "watch" ]
        ++ (if alertCommand == null then [ ] else [ "--alert-command" alertCommand ])
        ++ (if metrics == null then [ ] else [ "--metrics" metrics ])
        ++ (if soak == null then [ ] else [ "--soak" soak ])
        ++ (if advance then [ ] else [ "--no-rollout" ]);
    in
    concatStringsSep " " ([ bin ] ++ map quote args);

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
