//! The packaging in `packaging/`, checked with the real tools:
//! - every .nix file parses (`nix-instantiate --parse`);
//! - the plain functions behind the NixOS modules (`packaging/nixos/lib.nix`) evaluate on a
//!   sample fleet.toml to the expected users and the sshd text of the contract
//!   (the sshd contract in ARCHITECTURE.md), and real `sshd -t` / `sshd -T` accept and apply that text;
//! - the agent.toml they render passes the real `tiffin agent --check-config`;
//! - the systemd unit passes `systemd-analyze verify` and carries the module's settings;
//! - the .desktop file passes `desktop-file-validate`;
//! - each NixOS module and the package, evaluated one at a time against stand-ins for the few
//!   nixpkgs functions they use (tests/fixtures/packaging/eval-*.nix), set what they should
//!   and their assertions fire with messages that name the option and the fix.
//!
//! Under `CI=true` a missing tool is a failure; elsewhere the test says why it skips. One
//! exception, on purpose: `systemd-analyze verify` needs only the tool, but if it cannot verify
//! even a trivial unit in this environment (some containers), the test says so and passes,
//! because that says nothing about our unit; a missing `systemd-analyze` still fails under CI.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tiffin::config::AgentConfig;
use tiffin::runner::{CmdOutput, Runner};

const TIMEOUT: Option<Duration> = Some(Duration::from_secs(120));

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures/packaging").join(name)
}

fn lib_nix() -> PathBuf {
    repo().join("packaging/nixos/lib.nix")
}

use crate::support::prerequisite;

/// The tool's path, or `None` with a printed reason (outside CI only: under CI it panics).
fn tool(name: &str, debian_package: &str) -> Option<PathBuf> {
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&dirs)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    let why = format!(
        "`{name}` is not installed (Debian package {debian_package}; `packaging/deps.sh test` installs it)"
    );
    prerequisite(name, found.is_none().then_some(why));
    found
}

fn run(program: &Path, args: &[&str]) -> CmdOutput {
    let program = program.to_string_lossy();
    Runner::new()
        .run(&program, args, TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `nix-instantiate --eval --strict --json --expr EXPR`, where `lib` is packaging/nixos/lib.nix.
/// Debian's nix has no nixbld group; an empty build-users-group keeps its warning out of errors.
fn nix_eval(expr: &str) -> Result<Value, String> {
    let nix = tool("nix-instantiate", "nix-bin").ok_or("no nix-instantiate")?;
    let full = format!("let lib = import {}; in {expr}", lib_nix().display());
    let out = Runner::new()
        .run(
            "env",
            &[
                "NIX_CONFIG=build-users-group =",
                &nix.to_string_lossy(),
                "--eval",
                "--strict",
                "--json",
                "--expr",
                &full,
            ],
            TIMEOUT,
        )
        .map_err(|e| e.to_string())?;
    if !out.success() {
        return Err(out.stderr);
    }
    serde_json::from_str(&out.stdout).map_err(|e| format!("{e}: {}", out.stdout))
}

fn have_nix() -> bool {
    tool("nix-instantiate", "nix-bin").is_some()
}

fn eval_ok(expr: &str) -> Value {
    nix_eval(expr).unwrap_or_else(|e| panic!("evaluating {expr}:\n{e}"))
}

fn eval_string(expr: &str) -> String {
    match eval_ok(expr) {
        Value::String(s) => s,
        other => panic!("{expr} gave {other}, not a string"),
    }
}

const LAPTOP_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAII/fFjB+UdFJl3Q6L4epuThLZhqYD3SUlnH0B4iRtrtY root@laptop";
const BUILDER_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJDWYiK/NRju/dMgJLsD/bSTAtvFcMJup0F87+ozd/Mv root@builder";
const SERVER_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDsdO2/P2LoPncj3x48T3pwIv4gN0/H/zfak2miDp5nl root@server";

fn sample_fleet() -> String {
    format!("(lib.readFleet {})", fixture("fleet.toml").display())
}

/// The contract's Match block (the sshd contract in ARCHITECTURE.md), written out by hand.
fn contract_match_block(user: &str, chroot: &str) -> String {
    format!(
        "Match User {user}
    ChrootDirectory {chroot}
    ForceCommand internal-sftp
    AuthorizedKeysFile /etc/ssh/tiffin/authorized_keys/%u
    AuthenticationMethods publickey
    PasswordAuthentication no
    KbdInteractiveAuthentication no
    DisableForwarding yes
    AllowTcpForwarding no
    AllowAgentForwarding no
    AllowStreamLocalForwarding no
    PermitTunnel no
    X11Forwarding no
    PermitTTY no
"
    )
}

fn all_nix_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .path();
        if path.is_dir() {
            all_nix_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "nix") {
            out.push(path);
        }
    }
}

#[test]
fn every_nix_file_parses() {
    let Some(nix) = tool("nix-instantiate", "nix-bin") else {
        return;
    };
    // The parser must be able to say no, or a pass below means nothing.
    let broken = run(&nix, &["--parse", "--expr", "{ a = ; }"]);
    assert!(
        !broken.success(),
        "nix-instantiate --parse accepted a broken expression"
    );

    let mut files = Vec::new();
    all_nix_files(&repo().join("packaging"), &mut files);
    files.sort();
    for expected in [
        "packaging/flake.nix",
        "packaging/nix/package.nix",
        "packaging/nixos/agent.nix",
        "packaging/nixos/lib.nix",
        "packaging/nixos/server.nix",
        "packaging/nixos/tray.nix",
    ] {
        assert!(
            files.contains(&repo().join(expected)),
            "{expected} is missing"
        );
    }
    for file in &files {
        let out = run(&nix, &["--parse", &file.to_string_lossy()]);
        assert!(
            out.success(),
            "{} does not parse:\n{}",
            file.display(),
            out.stderr
        );
    }
}

#[test]
fn fleet_toml_becomes_one_tiffin_system_user_per_host() {
    if !have_nix() {
        return;
    }
    let users = eval_ok(&format!(
        "lib.users {{ fleet = {}; shell = \"/run/current-system/sw/bin/nologin\"; uids = {{ laptop = 401; }}; }}",
        sample_fleet()
    ));
    let expected = json!({
        "laptop": {
            "uid": 401,
            "group": "laptop",
            "extraGroups": ["tiffin"],
            "isSystemUser": true,
            "home": "/var/empty",
            "shell": "/run/current-system/sw/bin/nologin",
            "hashedPassword": "*",
            "keys": [LAPTOP_KEY],
        },
        // fleet.toml gives this host its own user name.
        "tiffin-builder": {
            "group": "tiffin-builder",
            "extraGroups": ["tiffin"],
            "isSystemUser": true,
            "home": "/var/empty",
            "shell": "/run/current-system/sw/bin/nologin",
            "hashedPassword": "*",
            "keys": [BUILDER_KEY],
        },
    });
    assert_eq!(users, expected);

    // Each user's primary group is its own (a fixed uid is also its gid); `tiffin` is shared.
    let groups = eval_ok(&format!(
        "lib.groups {{ fleet = {}; uids = {{ laptop = 401; }}; }}",
        sample_fleet()
    ));
    assert_eq!(
        groups,
        json!({ "tiffin": {}, "laptop": { "gid": 401 }, "tiffin-builder": {} })
    );

    let keys = eval_ok(&format!("lib.authorizedKeysFiles {}", sample_fleet()));
    assert_eq!(
        keys,
        json!({
            "ssh/tiffin/authorized_keys/laptop":
                { "mode": "0644", "user": "root", "group": "root", "text": format!("{LAPTOP_KEY}\n") },
            "ssh/tiffin/authorized_keys/tiffin-builder":
                { "mode": "0644", "user": "root", "group": "root", "text": format!("{BUILDER_KEY}\n") },
        })
    );
}

#[test]
fn fleet_toml_becomes_the_contract_sshd_match_blocks() {
    if !have_nix() {
        return;
    }
    let text = eval_string(&format!("lib.sshdMatchBlocks {}", sample_fleet()));
    // Hosts in name order; the chroot is fleet.toml's without its trailing slash, and by host
    // name even where the user name differs.
    let expected = format!(
        "{}\n{}\nMatch All\n",
        contract_match_block("tiffin-builder", "/srv/tiffin-test/builder"),
        contract_match_block("laptop", "/srv/tiffin-test/laptop")
    );
    assert_eq!(text, expected);
}

#[test]
fn fleet_toml_becomes_the_chroot_layout_as_tmpfiles_rules() {
    if !have_nix() {
        return;
    }
    let rules = eval_ok(&format!("lib.tmpfilesRules {}", sample_fleet()));
    assert_eq!(
        rules,
        json!([
            "d /srv/tiffin-test 0755 root root -",
            "d /srv/tiffin-test/builder 0755 root root -",
            "d /srv/tiffin-test/builder/gens 0755 root root -",
            "d /srv/tiffin-test/builder/logs 0700 tiffin-builder tiffin-builder -",
            "d /srv/tiffin-test/builder/backup 0700 tiffin-builder tiffin-builder -",
            "d /srv/tiffin-test/laptop 0755 root root -",
            "d /srv/tiffin-test/laptop/gens 0755 root root -",
            "d /srv/tiffin-test/laptop/logs 0700 laptop laptop -",
            "d /srv/tiffin-test/laptop/backup 0700 laptop laptop -",
        ])
    );
}

#[test]
fn max_startups_grows_with_the_fleet_from_sshds_default() {
    if !have_nix() {
        return;
    }
    let got = eval_ok("map lib.maxStartups [ 0 3 10 64 500 ]");
    assert_eq!(
        got,
        json!([
            "10:30:100",
            "10:30:100",
            "10:30:100",
            "64:30:128",
            "500:30:1000"
        ])
    );
}

#[test]
fn bad_fleet_toml_is_refused_naming_file_host_and_problem() {
    if !have_nix() {
        return;
    }
    for (file, must_say) in [
        (
            "fleet-bad-host.toml",
            ["[hosts.Laptop]", "not usable as a Unix user name"],
        ),
        (
            "fleet-unknown-key.toml",
            ["[hosts.laptop]", "unknown key \"keys\""],
        ),
        (
            "fleet-duplicate-user.toml",
            ["fleet-duplicate-user.toml", "user \"shared\""],
        ),
    ] {
        let path = fixture(file);
        let err = nix_eval(&format!(
            "lib.users {{ fleet = lib.readFleet {}; }}",
            path.display()
        ))
        .expect_err(file);
        assert!(err.contains(&path.display().to_string()), "{file}: {err}");
        for words in must_say {
            assert!(err.contains(words), "{file}: expected {words:?} in:\n{err}");
        }
    }
}

/// A free loopback port: bind to 0 and let the kernel choose.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// A minimal sshd_config around `body` in `dir`, with its own host key.
fn sshd_config(dir: &Path, body: &str) -> PathBuf {
    let keygen = tool("ssh-keygen", "openssh-client").expect("ssh-keygen");
    let key = dir.join("host_ed25519");
    if !key.exists() {
        let out = run(
            &keygen,
            &[
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-f",
                &key.to_string_lossy(),
            ],
        );
        assert!(out.success(), "{}", out.describe_failure());
    }
    let config = dir.join("sshd_config");
    let text = format!(
        "Port {}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nUsePAM no\n{body}",
        free_port(),
        key.display(),
        dir.join("sshd.pid").display()
    );
    std::fs::write(&config, text).expect("writing sshd_config");
    config
}

/// sshd -t refuses to run without its privilege separation directory, which only exists while
/// the distribution's sshd service runs. Creating it is what that service does.
fn sshd_ready() -> Option<PathBuf> {
    let sshd = tool("sshd", "openssh-server")?;
    tool("ssh-keygen", "openssh-client")?;
    let privsep = Path::new("/run/sshd");
    if !privsep.is_dir() && std::fs::create_dir_all(privsep).is_err() {
        let why = "/run/sshd is missing and cannot be created (needs root)";
        prerequisite("sshd", Some(why.into()));
        return None;
    }
    Some(sshd)
}

#[test]
fn real_sshd_accepts_and_applies_the_generated_sshd_text() {
    let Some(sshd) = sshd_ready() else { return };
    if !have_nix() {
        return;
    }
    let blocks = eval_string(&format!("lib.sshdMatchBlocks {}", sample_fleet()));
    let max_startups = eval_string("lib.maxStartups 2");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = sshd_config(dir.path(), &format!("MaxStartups {max_startups}\n{blocks}"));
    let config_arg = config.to_string_lossy();

    let test = run(&sshd, &["-t", "-f", &config_arg]);
    assert!(
        test.success(),
        "sshd -t refused:\n{}",
        test.describe_failure()
    );

    // -T prints the configuration sshd would apply to a connection: the block must bind the
    // host's user, and only that user.
    let effective = |user: &str| {
        let spec = format!("user={user},host=agent.example.org,addr=127.0.0.1");
        let out = run(&sshd, &["-T", "-f", &config_arg, "-C", &spec]);
        assert!(out.success(), "{}", out.describe_failure());
        out.stdout
    };
    let laptop = effective("laptop");
    for line in [
        "chrootdirectory /srv/tiffin-test/laptop",
        "forcecommand internal-sftp",
        "authorizedkeysfile /etc/ssh/tiffin/authorized_keys/%u",
        "authenticationmethods publickey",
        "disableforwarding yes",
        "passwordauthentication no",
        "kbdinteractiveauthentication no",
        "allowtcpforwarding no",
        "allowagentforwarding no",
        "allowstreamlocalforwarding no",
        "permittunnel no",
        "x11forwarding no",
        "permittty no",
        "maxstartups 10:30:100",
    ] {
        assert!(
            laptop.lines().any(|l| l == line),
            "laptop lacks {line:?}:\n{laptop}"
        );
    }
    let builder = effective("tiffin-builder");
    assert!(builder
        .lines()
        .any(|l| l == "chrootdirectory /srv/tiffin-test/builder"));
    let stranger = effective("someone-else");
    assert!(
        stranger.lines().any(|l| l == "chrootdirectory none"),
        "{stranger}"
    );
    assert!(
        stranger.lines().any(|l| l == "forcecommand none"),
        "{stranger}"
    );
}

#[test]
fn real_sshd_refuses_a_broken_match_block() {
    // The control for the test above: sshd -t does reject a bad block.
    let Some(sshd) = sshd_ready() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let config = sshd_config(dir.path(), "Match User laptop\n    ChrootDirectory\n");
    let out = run(&sshd, &["-t", "-f", &config.to_string_lossy()]);
    assert!(
        !out.success(),
        "sshd -t accepted a ChrootDirectory without a path"
    );
}

#[test]
fn known_hosts_pins_the_server_key_in_the_form_openssh_looks_up() {
    if !have_nix() {
        return;
    }
    let Some(keygen) = tool("ssh-keygen", "openssh-client") else {
        return;
    };
    let text = eval_string(&format!(
        "lib.knownHosts {{ server = \"fleet.example.org\"; port = 2222; serverHostKey = \"{SERVER_KEY}\"; }}"
    ));
    let blob = SERVER_KEY.trim_end_matches(" root@server");
    assert_eq!(text, format!("[fleet.example.org]:2222 {blob}\n"));

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("known_hosts");
    std::fs::write(&file, &text).expect("writing known_hosts");
    let file = file.to_string_lossy();
    let found = run(&keygen, &["-F", "[fleet.example.org]:2222", "-f", &file]);
    assert!(
        found.success(),
        "ssh-keygen -F did not find the server: {}",
        found.describe_failure()
    );
    let wrong_port = run(&keygen, &["-F", "[fleet.example.org]:22", "-f", &file]);
    assert!(!wrong_port.success(), "the pin must hold for its port only");

    let bad = nix_eval(
        "lib.knownHosts { server = \"fleet.example.org\"; serverHostKey = \"AAAA no type\"; }",
    )
    .expect_err("a key without a type");
    assert!(bad.contains("serverHostKey"), "{bad}");
}

/// The agent module's options as the test passes them: every documented key differs from its
/// default, and the health checks carry characters TOML must escape.
const AGENT_OPTIONS: &str = r#"{
  host = "laptop";
  server = "fleet.example.org";
  port = 2222;
  identityFile = "/etc/tiffin/id_ed25519";
  knownHostsFile = "/etc/tiffin/known_hosts";
  interval = "5m";
  jitter = "30s";
  policy = "notify";
  deadline = "12h";
  operation = "boot";
  verifyTimeout = "90s";
  healthChecks = [ "systemctl is-active sshd.service" "sh -c 'test \"$(hostname)\" = laptop' # \\ é" ];
  socketGroup = "tiffin-users";
  adminGroup = "admins";
  httpTrigger = "";
  trustedKey = "/etc/tiffin/admin.pub";
  build = "prebuilt";
  system = {
    nix = "/nix/store/x-nix/bin/nix";
    nix_build = "/nix/store/x-nix/bin/nix-build";
    nix_env = "/nix/store/x-nix/bin/nix-env";
    nix_store = "/nix/store/x-nix/bin/nix-store";
    systemd_run = "";
  };
}"#;

#[test]
fn the_agent_modules_backup_options_become_a_backup_table_the_real_agent_accepts() {
    if !have_nix() {
        return;
    }
    let options = r#"{ host = "laptop"; server = "fleet.example.org"; backup = {
        paths = [ "/home" "/etc" ]; exclude = [ "/home/*/.cache" ]; schedule = "6h";
        keep = { daily = 7; weekly = 4; monthly = 6; };
        passwordFile = "/etc/tiffin/backup-password"; restic = "/nix/store/x-restic/bin/restic"; }; }"#;
    let text = eval_string(&format!("lib.agentToml {options}"));
    let c = AgentConfig::parse(&text, "agent.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    let b = c.backup.expect("a [backup] table");
    assert_eq!(b.paths, [Path::new("/home"), Path::new("/etc")]);
    assert_eq!(b.schedule, std::time::Duration::from_secs(6 * 3600));
    assert_eq!(
        b.keep.args(),
        [
            "--keep-daily",
            "7",
            "--keep-weekly",
            "4",
            "--keep-monthly",
            "6"
        ]
    );
    assert_eq!(b.password_file, Path::new("/etc/tiffin/backup-password"));
    assert_eq!(b.restic, "/nix/store/x-restic/bin/restic");
    // Without backup options there is no table; an unknown forget key is refused by name.
    let plain = eval_string(r#"lib.agentToml { host = "laptop"; server = "fleet.example.org"; }"#);
    assert!(!plain.contains("[backup]"), "{plain}");
    let err = nix_eval(
        r#"lib.agentToml { host = "laptop"; server = "fleet.example.org"; backup = { paths = [ "/h" ]; keep = { dialy = 1; }; }; }"#,
    )
    .expect_err("an unknown keep key");
    assert!(
        err.contains("backup.keep") && err.contains("dialy"),
        "{err}"
    );
}

#[test]
fn rendered_agent_toml_passes_the_real_agents_check_with_every_value_kept() {
    if !have_nix() {
        return;
    }
    let text = eval_string(&format!("lib.agentToml {AGENT_OPTIONS}"));
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, &text).expect("writing agent.toml");

    let check = run(
        Path::new(env!("CARGO_BIN_EXE_tiffin")),
        &[
            "agent",
            "--config",
            &file.to_string_lossy(),
            "--check-config",
        ],
    );
    assert_eq!(check.code, Some(0), "{}\n{text}", check.describe_failure());

    let c = AgentConfig::parse(&text, "agent.toml").expect("the library parses it too");
    assert_eq!(c.host, "laptop");
    assert_eq!(
        c.source.to_string(),
        "sftp://laptop@fleet.example.org:2222/"
    );
    assert_eq!(c.identity, PathBuf::from("/etc/tiffin/id_ed25519"));
    assert_eq!(c.known_hosts, PathBuf::from("/etc/tiffin/known_hosts"));
    assert_eq!(c.state_dir, PathBuf::from("/var/lib/tiffin"));
    assert_eq!(c.socket, PathBuf::from("/run/tiffin/agent.sock"));
    assert_eq!(c.socket_group, "tiffin-users");
    assert_eq!(c.admin_group, "admins");
    assert_eq!(c.interval, Duration::from_secs(300));
    assert_eq!(c.jitter, Duration::from_secs(30));
    assert_eq!(c.policy, tiffin::status::Policy::Notify);
    assert_eq!(c.deadline, Duration::from_secs(12 * 3600));
    assert_eq!(c.operation, tiffin::config::Operation::Boot);
    assert_eq!(c.build, tiffin::config::agent::BuildPolicy::Prebuilt);
    assert_eq!(c.system.nix_store, "/nix/store/x-nix/bin/nix-store");
    assert_eq!(c.verify_timeout, Duration::from_secs(90));
    assert_eq!(
        c.health_checks,
        vec![
            "systemctl is-active sshd.service".to_string(),
            "sh -c 'test \"$(hostname)\" = laptop' # \\ é".to_string(),
        ]
    );
    assert_eq!(c.http_trigger, "");
    assert_eq!(c.trusted_key, "/etc/tiffin/admin.pub");
    assert_eq!(c.system.nix, "/nix/store/x-nix/bin/nix");
    assert_eq!(c.system.nix_env, "/nix/store/x-nix/bin/nix-env");
    assert_eq!(c.system.systemd_run, "");
    // Keys not given keep the agent's own defaults.
    assert_eq!(
        c.system.profile,
        PathBuf::from("/nix/var/nix/profiles/system")
    );
}

#[test]
fn an_https_source_with_a_pinned_ca_renders_an_agent_toml_the_real_agent_accepts() {
    if !have_nix() {
        return;
    }
    let text = eval_string(
        r#"lib.agentToml { host = "laptop"; source = "https://web.example.org/q3VzZXItcHJlZml4LW9mLWxhcHRvcA/"; trustedKey = "/etc/tiffin/admin.pub"; httpCa = "/etc/tiffin/fleet-ca.pem"; }"#,
    );
    let c = AgentConfig::parse(&text, "agent.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(c.source.is_http(), "{text}");
    assert_eq!(c.http_ca, Some(PathBuf::from("/etc/tiffin/fleet-ca.pem")));
    // fleet.toml's [http] root and http_prefix are known to the server module too.
    let fleet = eval_ok(&format!(
        r#"(lib.checkFleet {{ http = {{ root = "/srv/tiffin-web"; }}; hosts.laptop = {{ key = "{LAPTOP_KEY}"; http_prefix = "q3VzZXItcHJlZml4LW9mLWxhcHRvcA"; }}; }}).hosts"#
    ));
    assert!(fleet.to_string().contains("laptop"), "{fleet}");
}

#[test]
fn the_agent_modules_sources_and_report_to_render_what_the_agent_accepts() {
    if !have_nix() {
        return;
    }
    let text = eval_string(
        r#"lib.agentToml { host = "laptop"; server = "fleet.example.org"; sources = [ "sftp://lap@a:22/" "sftp://lap@b:22/" ]; reportTo = "sftp://lap@b:22/"; }"#,
    );
    let c = AgentConfig::parse(&text, "agent.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(c.sources.len(), 2, "{text}");
    assert_eq!(c.report_to, Some(c.sources[1].clone()), "{text}");
    assert!(!text.contains("\nsource ="), "{text}");
}

#[test]
fn minimal_agent_options_render_the_documented_defaults() {
    if !have_nix() {
        return;
    }
    let text = eval_string(
        r#"lib.agentToml { host = "laptop"; server = "fleet.example.org"; user = "lap"; }"#,
    );
    let c = AgentConfig::parse(&text, "agent.toml").expect("valid agent.toml");
    let defaults = AgentConfig::parse(
        "host = \"laptop\"\nsource = \"sftp://lap@fleet.example.org:22/\"\n",
        "defaults.toml",
    )
    .expect("defaults");
    assert_eq!(c, defaults, "rendered:\n{text}");
}

#[test]
fn agent_check_rejects_what_the_module_would_render_from_a_bad_duration() {
    // The NixOS module runs this same check at build time (checkConfig): it must catch a typo.
    if !have_nix() {
        return;
    }
    let text = eval_string(
        r#"lib.agentToml { host = "laptop"; server = "fleet.example.org"; interval = "soon"; }"#,
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, &text).expect("writing agent.toml");
    let check = run(
        Path::new(env!("CARGO_BIN_EXE_tiffin")),
        &[
            "agent",
            "--config",
            &file.to_string_lossy(),
            "--check-config",
        ],
    );
    assert_eq!(check.code, Some(2), "{}", check.describe_failure());
    // Line 9 of the rendered file is `interval`.
    assert!(
        check.stderr.contains("agent.toml:9:") && check.stderr.contains("\"soon\""),
        "{}",
        check.stderr
    );
}

fn unit_file() -> PathBuf {
    repo().join("packaging/systemd/tiffin-agent.service")
}

/// `[Service]` lines of a unit file as (key, value), in order.
fn service_section(text: &str) -> Vec<(String, String)> {
    let mut in_service = false;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service && !line.is_empty() && !line.starts_with('#') {
            if let Some((k, v)) = line.split_once('=') {
                out.push((k.to_string(), v.to_string()));
            }
        }
    }
    out
}

#[test]
fn systemd_unit_carries_the_nixos_modules_service_settings() {
    if !have_nix() {
        return;
    }
    let shared = eval_ok("lib.agentServiceConfig");
    let text = std::fs::read_to_string(unit_file()).expect("reading the unit");
    let unit = service_section(&text);
    let Value::Object(shared) = shared else {
        panic!("agentServiceConfig is not an attribute set: {shared}")
    };
    assert!(shared.contains_key("Type") && shared.contains_key("StateDirectory"));
    for (key, value) in shared {
        let want = match value {
            Value::String(s) => s,
            Value::Bool(b) => b.to_string(),
            other => other.to_string(),
        };
        assert!(
            unit.iter().any(|(k, v)| *k == key && *v == want),
            "{}: [Service] lacks {key}={want} (packaging/nixos/lib.nix agentServiceConfig has it)",
            unit_file().display()
        );
    }
    assert!(unit
        .iter()
        .any(|(k, v)| k == "ExecStart" && v.ends_with(" agent --config /etc/tiffin/agent.toml")));
}

/// systemd-analyze verify's complaints about `unit` (it also reports other units it loads).
fn verify(analyze: &Path, unit: &Path) -> (bool, Vec<String>) {
    let out = run(analyze, &["verify", &unit.to_string_lossy()]);
    let name = unit
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let about_unit = out
        .combined()
        .lines()
        .filter(|l| l.contains(&name))
        .map(str::to_string)
        .collect();
    (out.success(), about_unit)
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let Some(analyze) = tool("systemd-analyze", "systemd") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");

    // If even a trivial unit cannot be verified here, this environment cannot verify units.
    let control = dir.path().join("tiffin-control.service");
    std::fs::write(&control, "[Service]\nType=oneshot\nExecStart=/bin/true\n").expect("write");
    let (ok, complaints) = verify(&analyze, &control);
    if !ok || !complaints.is_empty() {
        eprintln!("skipped: systemd-analyze verify cannot verify units here: {complaints:?}");
        return;
    }

    // verify checks that ExecStart is executable: point it at the binary cargo built.
    let text = std::fs::read_to_string(unit_file()).expect("reading the unit");
    assert!(
        text.contains("ExecStart=/usr/local/bin/tiffin "),
        "ExecStart moved: update this test"
    );
    let ours = dir.path().join("tiffin-agent.service");
    std::fs::write(
        &ours,
        text.replace("/usr/local/bin/tiffin", env!("CARGO_BIN_EXE_tiffin")),
    )
    .expect("write");
    let (ok, complaints) = verify(&analyze, &ours);
    assert!(
        ok && complaints.is_empty(),
        "systemd-analyze verify: {complaints:#?}"
    );

    // The same check sees a misspelt key (systemd only warns, so warnings count as failures).
    let typo = dir.path().join("tiffin-typo.service");
    std::fs::write(
        &typo,
        text.replace("PrivateTmp=", "PrivateTemp=")
            .replace("/usr/local/bin/tiffin", env!("CARGO_BIN_EXE_tiffin")),
    )
    .expect("write");
    let (_, complaints) = verify(&analyze, &typo);
    assert!(
        complaints.iter().any(|l| l.contains("PrivateTemp")),
        "a misspelt key went unnoticed: {complaints:?}"
    );
}

#[test]
fn systemd_socket_unit_holds_the_trigger_port_for_the_agent() {
    let socket = repo().join("packaging/systemd/tiffin-agent-http.socket");
    let text = std::fs::read_to_string(&socket).expect("reading the socket unit");
    let has = |t: &str, line: &str| t.lines().any(|l| l.trim() == line);
    let default_trigger = AgentConfig::parse("host = \"a\"\nsource = \"file:///x\"\n", "a.toml")
        .expect("defaults")
        .http_trigger;
    for line in [
        format!("ListenStream={default_trigger}"),
        format!(
            "FileDescriptorName={}",
            tiffin::agent::daemon::http::listen::FD_NAME
        ),
        "Service=tiffin-agent.service".to_string(),
        "WantedBy=sockets.target".to_string(),
    ] {
        assert!(has(&text, &line), "{} lacks {line}", socket.display());
    }
    let service = std::fs::read_to_string(unit_file()).expect("reading the unit");
    assert!(
        has(&service, "Sockets=tiffin-agent-http.socket"),
        "{} does not take the trigger's socket",
        unit_file().display()
    );

    let Some(analyze) = tool("systemd-analyze", "systemd") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let control = dir.path().join("tiffin-control.socket");
    std::fs::write(&control, "[Socket]\nListenStream=127.0.0.1:1\n").expect("write");
    let (ok, complaints) = verify(&analyze, &control);
    if !ok || !complaints.is_empty() {
        eprintln!("skipped: systemd-analyze verify cannot verify units here: {complaints:?}");
        return;
    }
    let ours = dir.path().join("tiffin-agent-http.socket");
    std::fs::write(&ours, &text).expect("write");
    std::fs::write(
        dir.path().join("tiffin-agent.service"),
        service.replace("/usr/local/bin/tiffin", env!("CARGO_BIN_EXE_tiffin")),
    )
    .expect("write");
    let (ok, complaints) = verify(&analyze, &ours);
    assert!(
        ok && complaints.is_empty(),
        "systemd-analyze verify: {complaints:#?}"
    );
}

#[test]
fn tray_desktop_entry_passes_desktop_file_validate_and_autostarts() {
    let Some(validate) = tool("desktop-file-validate", "desktop-file-utils") else {
        return;
    };
    let file = repo().join("packaging/xdg/tiffin-tray.desktop");
    let out = run(&validate, &[&file.to_string_lossy()]);
    // Hints and warnings count too: a clean file prints nothing.
    assert!(
        out.success() && out.combined().trim().is_empty(),
        "{}",
        out.describe_failure()
    );
    let text = std::fs::read_to_string(&file).expect("reading the desktop file");
    for line in [
        "Exec=tiffin-tray",
        "X-GNOME-Autostart-enabled=true",
        "Type=Application",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{} lacks {line}",
            file.display()
        );
    }
}

// ---- The modules themselves, through tests/fixtures/packaging/eval-module.nix: a stand-in for
// the few nixpkgs functions they use, so that one module evaluates here without nixpkgs. It
// proves what each module sets from its options, not how NixOS merges modules.

fn eval_module(module: &str, settings: &str, system: &str) -> Value {
    eval_ok(&format!(
        "import {} {{ module = {}; settings = {settings}; system = {system}; }}",
        fixture("eval-module.nix").display(),
        repo().join("packaging/nixos").join(module).display()
    ))
}

fn failed_assertions(result: &Value) -> Vec<String> {
    serde_json::from_value(result["failedAssertions"].clone()).expect("a list of messages")
}

fn assert_failed(result: &Value, words: &[&str]) {
    let failed = failed_assertions(result);
    assert!(
        failed.iter().any(|m| words.iter().all(|w| m.contains(w))),
        "no failed assertion says {words:?}: {failed:#?}"
    );
}

#[test]
fn server_module_makes_users_keys_sshd_text_and_chroots_from_fleet_toml() {
    if !have_nix() {
        return;
    }
    let fleet = fixture("fleet.toml");
    let r = eval_module(
        "server.nix",
        &format!("{{ enable = true; fleetFile = {}; }}", fleet.display()),
        "{ }",
    );
    assert_eq!(failed_assertions(&r), Vec::<String>::new());
    let c = &r["config"];
    let users = &c["users"]["users"];
    assert_eq!(
        users["laptop"],
        json!({ "group": "laptop", "extraGroups": ["tiffin"], "isSystemUser": true,
                "home": "/var/empty", "shell": "/nix/store/shadow/bin/nologin",
                "hashedPassword": "*" }),
        "NixOS users get the nologin NixOS has, and no `keys` (not a users.users option)"
    );
    assert!(users.get("tiffin-builder").is_some());
    assert_eq!(
        c["users"]["groups"],
        json!({ "tiffin": {}, "laptop": {}, "tiffin-builder": {} })
    );
    assert_eq!(
        c["environment"]["etc"]["ssh/tiffin/authorized_keys/laptop"]["text"],
        json!(format!("{LAPTOP_KEY}\n"))
    );
    let blocks = format!(
        "\n{}\n{}\nMatch All\n",
        contract_match_block("tiffin-builder", "/srv/tiffin-test/builder"),
        contract_match_block("laptop", "/srv/tiffin-test/laptop")
    );
    assert_eq!(c["services"]["openssh"]["extraConfig"], json!(blocks));
    // After other modules' mkAfter text (1500, e.g. nix.sshServe's), which so stays global.
    assert_eq!(r["orders"], json!({ "services.openssh.extraConfig": 2000 }));
    assert_eq!(c["services"]["openssh"]["enable"], json!(true));
    assert_eq!(
        c["services"]["openssh"]["settings"]["MaxStartups"],
        json!("10:30:100")
    );
    assert_eq!(
        c["systemd"]["tmpfiles"]["rules"].as_array().map(Vec::len),
        // The chroot root, then per host: its chroot, gens/, logs/ and backup/.
        Some(9)
    );
    assert_eq!(c["nix"], Value::Null, "no binary cache unless asked for");

    let cached = eval_module(
        "server.nix",
        &format!(
            "{{ enable = true; fleetFile = {}; binaryCache = {{ enable = true; secretKeyFile = \"/var/lib/nix-cache/key\"; }}; }}",
            fleet.display()
        ),
        "{ }",
    );
    assert_eq!(failed_assertions(&cached), Vec::<String>::new());
    let nix = &cached["config"]["nix"];
    assert_eq!(nix["sshServe"]["keys"], json!([BUILDER_KEY, LAPTOP_KEY]));
    assert_eq!(
        nix["settings"]["secret-key-files"],
        json!(["/var/lib/nix-cache/key"])
    );
}

#[test]
fn server_module_assertions_explain_what_is_wrong_and_what_to_do() {
    if !have_nix() {
        return;
    }
    let r = eval_module(
        "server.nix",
        &format!(
            "{{ enable = true; fleetFile = {}; chrootDir = \"/tmp/tiffin\"; binaryCache.enable = true; }}",
            fixture("fleet.toml").display()
        ),
        "{ }",
    );
    assert_failed(
        &r,
        &[
            "chrootDir = \"/tmp/tiffin\"",
            "chroot = \"/srv/tiffin-test\"",
            "change one",
        ],
    );
    assert_failed(&r, &["/tmp/tiffin", "sshd refuses"]);
    assert_failed(&r, &["binaryCache.enable needs binaryCache.secretKeyFile"]);
}

#[test]
fn server_module_mirror_role_serves_the_same_chroots_and_lets_only_the_publisher_in_as_root() {
    if !have_nix() {
        return;
    }
    let fleet = fixture("fleet-mirrors.toml");
    let mirror = |extra: &str| {
        eval_module(
            "server.nix",
            &format!(
                "{{ enable = true; fleetFile = {}; role = \"mirror\"; {extra} }}",
                fleet.display()
            ),
            "{ }",
        )
    };
    let publisher = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJDWYiK/NRju/dMgJLsD/bSTAtvFcMJup0F87+ozd/Mv root@fleet";
    let r = mirror(&format!(
        "chrootDir = \"/srv/tiffin-mirror\"; mirror.publisherKeys = [ \"{publisher}\" ]; mirror.publisherFrom = \"192.0.2.10\";"
    ));
    assert_eq!(failed_assertions(&r), Vec::<String>::new());
    let c = &r["config"];
    // The same users, keys and sshd contract as the primary, under the mirror's chroot root.
    assert_eq!(c["users"]["users"]["laptop"]["group"], json!("laptop"));
    assert_eq!(
        c["services"]["openssh"]["extraConfig"],
        json!(format!(
            "\n{}\nMatch All\n",
            contract_match_block("laptop", "/srv/tiffin-mirror/laptop")
        ))
    );
    assert_eq!(
        c["systemd"]["tmpfiles"]["rules"][0],
        json!("d /srv/tiffin-mirror 0755 root root -")
    );
    // The publisher's key, for root, from its address only, without forwarding or a terminal.
    assert_eq!(
        c["users"]["users"]["root"]["openssh"]["authorizedKeys"]["keys"],
        json!([format!(
            "from=\"192.0.2.10\",no-port-forwarding,no-agent-forwarding,no-X11-forwarding,no-pty {publisher}"
        )])
    );
    assert!(c["environment"]["systemPackages"]
        .as_array()
        .unwrap()
        .contains(&json!("/nix/store/rsync")));
    // The rsync+ssh:// mirror's path is a mirror root too.
    let b = mirror(&format!(
        "chrootDir = \"/data/tiffin\"; mirror.publisherKeys = [ \"{publisher}\" ];"
    ));
    assert_eq!(failed_assertions(&b), Vec::<String>::new());

    // A path no [[mirrors]] url names, no publisher key, root kept out, a watcher: refused.
    let bad = eval_module(
        "server.nix",
        &format!(
            "{{ enable = true; fleetFile = {}; role = \"mirror\"; chrootDir = \"/srv/elsewhere\"; watch = {{ enable = true; fleetDir = \"/var/lib/f\"; }}; }}",
            fleet.display()
        ),
        "{ services.openssh.settings.PermitRootLogin = \"no\"; }",
    );
    assert_failed(
        &bad,
        &[
            "/srv/elsewhere",
            "no sftp:// or rsync+ssh://",
            "/srv/tiffin-mirror",
        ],
    );
    assert_failed(&bad, &["needs mirror.publisherKeys"]);
    assert_failed(&bad, &["PermitRootLogin = \"no\"", "prohibit-password"]);
    assert_failed(&bad, &["a mirror publishes nothing"]);
    // The primary role keeps root out of it all and reads the same fleet.toml.
    let primary = eval_module(
        "server.nix",
        &format!("{{ enable = true; fleetFile = {}; }}", fleet.display()),
        "{ }",
    );
    assert_eq!(failed_assertions(&primary), Vec::<String>::new());
    assert_eq!(primary["config"]["users"]["users"].get("root"), None);
}

const SERVER_OPTIONS: &str = r#"enable = true; server = "fleet.example.org"; port = 2222;
  trustedKey = "/etc/tiffin/fleet-signing.pub";"#;

#[test]
fn agent_module_renders_a_config_the_real_agent_accepts_and_a_unit_a_switch_leaves_running() {
    if !have_nix() {
        return;
    }
    let r = eval_module(
        "agent.nix",
        &format!(
            "{{ {SERVER_OPTIONS} serverHostKey = \"{SERVER_KEY}\"; policy = \"notify\"; checkConfig = false; }}"
        ),
        r#"{ networking.hostName = "laptop"; }"#,
    );
    assert_eq!(failed_assertions(&r), Vec::<String>::new());
    let c = &r["config"];
    let etc = &c["environment"]["etc"];
    let blob = SERVER_KEY.trim_end_matches(" root@server");
    assert_eq!(
        etc["tiffin/known_hosts"]["text"],
        json!(format!("[fleet.example.org]:2222 {blob}\n"))
    );

    let text = etc["tiffin/agent.toml"]["source"]["text"]
        .as_str()
        .expect("agent.toml is written from text")
        .to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, &text).expect("writing agent.toml");
    let check = run(
        Path::new(env!("CARGO_BIN_EXE_tiffin")),
        &[
            "agent",
            "--config",
            &file.to_string_lossy(),
            "--check-config",
        ],
    );
    assert_eq!(check.code, Some(0), "{}\n{text}", check.describe_failure());
    let a = AgentConfig::parse(&text, "agent.toml").expect("valid agent.toml");
    assert_eq!(a.host, "laptop", "host defaults to networking.hostName");
    assert_eq!(
        a.source.to_string(),
        "sftp://laptop@fleet.example.org:2222/"
    );
    assert_eq!(a.policy, tiffin::status::Policy::Notify);
    assert_eq!(a.system.nix_env, "/nix/store/nix/bin/nix-env");
    assert_eq!(a.system.systemd_run, "/nix/store/systemd/bin/systemd-run");

    let unit = &c["systemd"]["services"]["tiffin-agent"];
    assert_eq!(unit["restartIfChanged"], json!(false));
    assert_eq!(
        unit["unitConfig"]["X-StopOnRemoval"],
        json!(false),
        "a switch to a configuration without the agent must not stop the agent running it"
    );
    assert_eq!(unit["wantedBy"], json!(["multi-user.target"]));
    assert!(
        unit["path"]
            .as_array()
            .is_some_and(|p| p.contains(&json!("/nix/store/openssh-system"))),
        "ssh comes from programs.ssh.package: {}",
        unit["path"]
    );
    assert_eq!(
        unit["environment"]["CURL_CA_BUNDLE"],
        json!("/etc/ssl/certs/ca-certificates.crt"),
        "as nix-daemon's, from security.pki"
    );
    let service = &unit["serviceConfig"];
    assert_eq!(service["Type"], json!("notify"));
    assert_eq!(service["RuntimeDirectory"], json!("tiffin"));
    assert_eq!(service["StateDirectory"], json!("tiffin"));
    assert_eq!(
        service["ExecStart"],
        json!("/nix/store/tiffin-headless/bin/tiffin agent --config /etc/tiffin/agent.toml")
    );
    for breaks_activation in [
        "ProtectSystem",
        "ProtectHome",
        "NoNewPrivileges",
        "RestrictSUIDSGID",
    ] {
        assert!(
            service.get(breaks_activation).is_none(),
            "{breaks_activation} would break activation"
        );
    }
    assert!(unit["preStart"]
        .as_str()
        .is_some_and(|s| s.contains("ssh-keygen -q -t ed25519") && s.contains("[hosts.laptop]")));
}

#[test]
fn agent_module_writes_backup_with_nixpkgs_restic_and_refuses_relative_paths() {
    if !have_nix() {
        return;
    }
    let r = eval_module(
        "agent.nix",
        &format!(
            "{{ {SERVER_OPTIONS} serverHostKey = \"{SERVER_KEY}\"; checkConfig = false; \
             backup = {{ enable = true; paths = [ \"/home\" ]; keep = {{ daily = 7; }}; }}; }}"
        ),
        r#"{ networking.hostName = "laptop"; }"#,
    );
    assert_eq!(failed_assertions(&r), Vec::<String>::new());
    let text = r["config"]["environment"]["etc"]["tiffin/agent.toml"]["source"]["text"]
        .as_str()
        .expect("agent.toml text")
        .to_string();
    let a = AgentConfig::parse(&text, "agent.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    let b = a.backup.expect("[backup]");
    assert_eq!(b.restic, "/nix/store/restic/bin/restic");
    assert_eq!(b.keep.args(), ["--keep-daily", "7"]);
    let r = eval_module(
        "agent.nix",
        &format!(
            "{{ {SERVER_OPTIONS} serverHostKey = \"{SERVER_KEY}\"; checkConfig = false; \
             backup = {{ enable = true; paths = [ \"home\" ]; }}; }}"
        ),
        r#"{ networking.hostName = "laptop"; }"#,
    );
    assert_failed(&r, &["backup.paths", "absolute"]);
}

#[test]
fn agent_module_checks_agent_toml_with_the_package_at_build_time() {
    if !have_nix() {
        return;
    }
    let r = eval_module(
        "agent.nix",
        &format!("{{ {SERVER_OPTIONS} serverHostKey = \"{SERVER_KEY}\"; }}"),
        r#"{ networking.hostName = "laptop"; }"#,
    );
    let script = r["config"]["environment"]["etc"]["tiffin/agent.toml"]["source"]["script"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        script.contains("/nix/store/tiffin-headless/bin/tiffin agent --config /nix/store/tiffin-agent.toml --check-config"),
        "{script}"
    );
}

#[test]
fn agent_module_assertions_name_the_option_and_the_fix() {
    if !have_nix() {
        return;
    }
    let r = eval_module(
        "agent.nix",
        r#"{ enable = true; port = 2222; interval = "soon"; socketGroup = "fleet-users";
             identityFile = "/nix/store/abc-key"; httpTrigger = "localhost:1"; useServerCache = true; }"#,
        r#"{ networking.hostName = "Laptop"; }"#,
    );
    assert_failed(&r, &["agent.host = \"Laptop\"", "lower-case"]);
    assert_failed(&r, &["agent.server is not set"]);
    assert_failed(&r, &["serverHostKey is not set", "ssh-keyscan -p 2222"]);
    assert_failed(&r, &["identityFile points into the Nix store"]);
    assert_failed(
        &r,
        &["socketGroup = \"fleet-users\"", "users.groups.fleet-users"],
    );
    assert_failed(&r, &["httpTrigger = \"localhost:1\"", "loopback"]);
    assert_failed(&r, &["useServerCache needs serverCachePublicKey"]);
    assert_failed(&r, &["interval = \"soon\" is not a duration"]);
    assert_failed(&r, &["trustedKey is not set", "allowUnsigned = true"]);
    assert_eq!(
        failed_assertions(&r).len(),
        9,
        "{:#?}",
        failed_assertions(&r)
    );
}

#[test]
fn agent_module_offers_the_servers_store_as_a_cache_with_the_pinned_key() {
    if !have_nix() {
        return;
    }
    let r = eval_module(
        "agent.nix",
        &format!(
            "{{ {SERVER_OPTIONS} serverHostKey = \"{SERVER_KEY}\"; useServerCache = true; serverCachePublicKey = \"fleet-1:abc=\"; serverCacheTrusted = true; }}"
        ),
        r#"{ networking.hostName = "laptop"; }"#,
    );
    assert_eq!(failed_assertions(&r), Vec::<String>::new());
    let c = &r["config"];
    assert_eq!(
        c["nix"]["settings"]["substituters"],
        json!(["ssh-ng://nix-ssh@fleet.example.org?ssh-key=/var/lib/tiffin/id_ed25519"])
    );
    assert_eq!(
        c["nix"]["settings"]["trusted-public-keys"],
        json!(["fleet-1:abc="])
    );
    let ssh = &c["programs"]["ssh"];
    assert_eq!(
        ssh["knownHosts"]["tiffin-server"]["hostNames"],
        json!(["[fleet.example.org]:2222"])
    );
    assert_eq!(
        ssh["knownHosts"]["tiffin-server"]["publicKey"],
        json!(SERVER_KEY)
    );
    assert!(ssh["extraConfig"]
        .as_str()
        .is_some_and(|s| s.contains("Port 2222")));
}

#[test]
fn tray_module_autostarts_by_xdg_or_by_a_graphical_session_user_service() {
    if !have_nix() {
        return;
    }
    let agent_on = "{ services.tiffin.agent.enable = true; }";
    let xdg = eval_module("tray.nix", r#"{ enable = true; }"#, agent_on);
    let c = &xdg["config"];
    assert_eq!(
        c["environment"]["etc"]["xdg/autostart/tiffin-tray.desktop"]["source"],
        json!("/nix/store/tiffin/share/applications/tiffin-tray.desktop")
    );
    assert_eq!(c["systemd"]["user"]["services"]["tiffin-tray"], Value::Null);
    assert_eq!(
        c["services"]["tiffin"]["agent"]["package"],
        json!("/nix/store/tiffin"),
        "the agent runs from the tray's package: one build"
    );
    assert_eq!(c["warnings"], json!([]));

    let user_service = eval_module(
        "tray.nix",
        r#"{ enable = true; autostart = "systemd"; }"#,
        agent_on,
    );
    let c = &user_service["config"];
    assert_eq!(
        c["environment"]["etc"]["xdg/autostart/tiffin-tray.desktop"],
        Value::Null
    );
    let unit = &c["systemd"]["user"]["services"]["tiffin-tray"];
    assert_eq!(unit["wantedBy"], json!(["graphical-session.target"]));
    assert_eq!(unit["partOf"], json!(["graphical-session.target"]));
    assert_eq!(
        unit["serviceConfig"]["ExecStart"],
        json!("/nix/store/tiffin/bin/tiffin-tray")
    );

    let alone = eval_module(
        "tray.nix",
        r#"{ enable = true; }"#,
        "{ services.tiffin.agent.enable = false; }",
    );
    assert!(
        alone["config"]["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("without services.tiffin.agent")),
        "{}",
        alone["config"]["warnings"]
    );
}

fn eval_package(with_tray: bool) -> Value {
    eval_ok(&format!(
        "import {} {{ withTray = {with_tray}; }}",
        fixture("eval-package.nix").display()
    ))
}

#[test]
fn headless_package_builds_without_default_features_and_without_gtk() {
    if !have_nix() {
        return;
    }
    let p = eval_package(false);
    assert_eq!(p["pname"], json!("tiffin-headless"));
    assert_eq!(p["version"], json!(env!("CARGO_PKG_VERSION")));
    assert_eq!(p["buildNoDefaultFeatures"], json!(true));
    assert_eq!(p["nativeBuildInputs"], json!(["pkg-config"]));
    assert_eq!(p["buildInputs"], json!(["openssl", "libssh2", "zlib"]));
    assert_eq!(p["postFixup"], json!(""));
    let install = p["postInstall"].as_str().unwrap_or_default();
    assert!(
        install.contains("lib/systemd/system/tiffin-agent.service"),
        "{install}"
    );
    assert!(!install.contains("tiffin-tray.desktop"), "{install}");
    assert_eq!(p["lockFileExists"], json!(true), "{}", p["lockFile"]);
    assert_eq!(
        PathBuf::from(p["lockFile"].as_str().unwrap_or_default()),
        repo().join("Cargo.lock")
    );
}

#[test]
fn tray_package_has_gtk_appindicator_and_a_wrapped_tray() {
    if !have_nix() {
        return;
    }
    let p = eval_package(true);
    assert_eq!(p["pname"], json!("tiffin"));
    assert_eq!(p["buildNoDefaultFeatures"], json!(false));
    assert_eq!(
        p["nativeBuildInputs"],
        json!(["pkg-config", "wrapGAppsHook3"])
    );
    assert_eq!(
        p["buildInputs"],
        json!([
            "openssl",
            "libssh2",
            "zlib",
            "gtk3",
            "libayatana-appindicator",
            "xdotool"
        ])
    );
    let fixup = p["postFixup"].as_str().unwrap_or_default();
    assert!(
        fixup.contains("LD_LIBRARY_PATH : libayatana-appindicator/lib")
            && fixup.contains("wrapGApp $out/bin/tiffin-tray"),
        "{fixup}"
    );
    let install = p["postInstall"].as_str().unwrap_or_default();
    // The files it installs are the ones in this repository.
    for file in [
        "packaging/systemd/tiffin-agent.service",
        "packaging/xdg/tiffin-tray.desktop",
        "assets/icons/tiffin.svg",
    ] {
        assert!(install.contains(file), "{install}");
        assert!(repo().join(file).is_file(), "{file} is missing");
    }
    assert!(install.contains("share/applications/tiffin-tray.desktop"));
    // The desktop entry's `Icon=tiffin` needs the icon in the hicolor theme.
    assert!(
        install.contains("share/icons/hicolor/scalable/apps/tiffin.svg"),
        "{install}"
    );
    assert_eq!(p["meta"]["mainProgram"], json!("tiffin"));
}

// ---- Issue 15/16: the server's sshd text and fleet.toml checks, the agent module's trust
// settings, its trigger socket and its state, and the flake.

#[test]
fn an_sshd_setting_appended_after_the_host_blocks_is_not_inside_them() {
    let Some(sshd) = sshd_ready() else { return };
    if !have_nix() {
        return;
    }
    let blocks = eval_string(&format!("lib.sshdMatchBlocks {}", sample_fleet()));
    assert!(blocks.ends_with("\nMatch All\n"), "{blocks}");
    // What another NixOS module appends with mkAfter lands after the blocks.
    let appended = "ClientAliveInterval 42\n";
    let dir = tempfile::tempdir().expect("temp dir");
    let effective = |text: &str, user: &str| {
        let config = sshd_config(dir.path(), text);
        let spec = format!("user={user},host=agent.example.org,addr=127.0.0.1");
        let out = run(&sshd, &["-T", "-f", &config.to_string_lossy(), "-C", &spec]);
        assert!(out.success(), "{}", out.describe_failure());
        out.stdout
    };
    let ours = format!("{blocks}{appended}");
    for user in ["someone-else", "laptop", "tiffin-builder"] {
        let got = effective(&ours, user);
        assert!(
            got.lines().any(|l| l == "clientaliveinterval 42"),
            "{user}: the appended setting does not apply to every connection:\n{got}"
        );
    }
    // The control: without `Match All` the same text would bind the last host's user only.
    let unclosed = ours.replace("\nMatch All\n", "\n");
    let stranger = effective(&unclosed, "someone-else");
    assert!(
        stranger.lines().any(|l| l == "clientaliveinterval 0"),
        "{stranger}"
    );
}

/// fleet.toml with one host `a` whose key is the Nix expression `key`.
fn fleet_with_key(key: &str) -> String {
    format!("lib.checkFleet {{ hosts.a.key = {key}; }}")
}

#[test]
fn a_host_key_with_options_or_a_newline_is_refused() {
    if !have_nix() {
        return;
    }
    let good = format!("\"{LAPTOP_KEY}\"");
    eval_ok(&fleet_with_key(&good));
    let tab_comment = format!("\"{LAPTOP_KEY}\\tand a\\ttab\"");
    eval_ok(&fleet_with_key(&tab_comment));
    for (why, key) in [
        (
            "options before the type",
            format!("\"command=\\\"/bin/sh\\\" {LAPTOP_KEY}\""),
        ),
        (
            "a second line with options of its own",
            format!("\"{LAPTOP_KEY}\\ncommand=\\\"/bin/sh\\\" {BUILDER_KEY}\""),
        ),
        ("a trailing newline", format!("\"{LAPTOP_KEY}\\n\"")),
        ("a carriage return", format!("\"{LAPTOP_KEY}\\rx\"")),
        (
            "an escape character in the comment",
            format!(
                "(\"{}\" + builtins.fromJSON \"\\\"\\\\u001b]0;x\\\\u0007\\\"\")",
                LAPTOP_KEY
            ),
        ),
        (
            "an ed25519 type over RSA key data",
            "\"ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAII/fFjB+UdFJl3Q6L4epuThLZhqYD3SUlnH0B4iRtrtY\""
                .to_string(),
        ),
        (
            "key data whose length is not base64's",
            "\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAII/fFjB+UdFJl3Q6L4epuThLZhqYD3SUlnH0B4iRtrt\""
                .to_string(),
        ),
    ] {
        let err = nix_eval(&fleet_with_key(&key)).expect_err(why);
        assert!(
            err.contains("fleet.toml: [hosts.a]: key"),
            "{why}: the error does not name the key:\n{err}"
        );
    }
}

#[test]
fn a_chroot_with_dot_components_or_shell_characters_is_refused() {
    if !have_nix() {
        return;
    }
    let fleet = |chroot: &str| {
        format!(
            "(lib.checkFleet {{ chroot = \"{chroot}\"; hosts.a.key = \"{LAPTOP_KEY}\"; }}).chroot"
        )
    };
    assert_eq!(eval_string(&fleet("/srv/tiffin.d/")), "/srv/tiffin.d");
    for bad in [
        "/srv/../etc",
        "/srv/./tiffin",
        "/srv/..",
        "srv/tiffin",
        "/srv/tif fin",
        "/srv/#x",
    ] {
        let err = nix_eval(&fleet(bad)).expect_err(bad);
        assert!(
            err.contains("fleet.toml: chroot") && err.contains(bad),
            "{bad}: {err}"
        );
    }
}

#[test]
fn a_host_user_named_like_the_shared_group_is_refused() {
    if !have_nix() {
        return;
    }
    let err = nix_eval(&format!(
        "lib.checkFleet {{ hosts.a = {{ key = \"{LAPTOP_KEY}\"; user = \"tiffin\"; }}; }}"
    ))
    .expect_err("a user named tiffin");
    assert!(err.contains("\"tiffin\"") && err.contains("group"), "{err}");
}

#[test]
fn server_module_refuses_other_users_in_a_hosts_own_group() {
    if !have_nix() {
        return;
    }
    let r = eval_module(
        "server.nix",
        &format!(
            "{{ enable = true; fleetFile = {}; }}",
            fixture("fleet.toml").display()
        ),
        r#"{ users.users.alice = { group = "users"; extraGroups = [ "laptop" ]; };
             users.users.bob = { group = "tiffin-builder"; };
             users.groups.laptop.members = [ "carol" ]; }"#,
    );
    assert_failed(&r, &["user alice", "group laptop"]);
    assert_failed(&r, &["user carol", "group laptop"]);
    assert_failed(&r, &["user bob", "group tiffin-builder"]);
}

#[test]
fn server_module_asserts_when_sshds_allow_or_deny_lists_would_lock_the_hosts_out() {
    if !have_nix() {
        return;
    }
    let fleet = fixture("fleet.toml");
    let with_sshd = |settings: &str| {
        eval_module(
            "server.nix",
            &format!("{{ enable = true; fleetFile = {}; }}", fleet.display()),
            &format!("{{ services.openssh.settings = {settings}; }}"),
        )
    };
    let locked = with_sshd(
        r#"{ AllowUsers = [ "admin" "laptop" ]; AllowGroups = [ "wheel" ]; DenyGroups = [ "tiffin-builder" ]; }"#,
    );
    assert_failed(&locked, &["AllowUsers", "[\"tiffin-builder\"]"]);
    assert_failed(&locked, &["AllowGroups", "Add \"tiffin\""]);
    assert_failed(&locked, &["DenyGroups", "tiffin-builder"]);
    assert_eq!(failed_assertions(&locked).len(), 3);

    let open = with_sshd(
        r#"{ AllowUsers = [ "admin" "laptop" "tiffin-builder" ]; AllowGroups = [ "wheel" "tiffin" ]; DenyUsers = [ "guest" ]; }"#,
    );
    assert_eq!(failed_assertions(&open), Vec::<String>::new());
}

/// The agent module evaluated with `options` (Nix attribute set body) on host "laptop".
fn eval_agent(options: &str) -> Value {
    eval_module(
        "agent.nix",
        &format!("{{ enable = true; checkConfig = false; {options} }}"),
        r#"{ networking.hostName = "laptop"; }"#,
    )
}

fn agent_toml_text(r: &Value) -> String {
    r["config"]["environment"]["etc"]["tiffin/agent.toml"]["source"]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("agent.toml is not written from text: {r}"))
        .to_string()
}

#[test]
fn agent_module_pins_the_server_key_for_an_explicit_sftp_source() {
    if !have_nix() {
        return;
    }
    let source = r#"source = "sftp://lap@[fd00::5]:2200/"; trustedKey = "/etc/tiffin/fleet.pub";"#;
    let pinned = eval_agent(&format!("{source} serverHostKey = \"{SERVER_KEY}\";"));
    assert_eq!(failed_assertions(&pinned), Vec::<String>::new());
    let blob = SERVER_KEY.trim_end_matches(" root@server");
    assert_eq!(
        pinned["config"]["environment"]["etc"]["tiffin/known_hosts"]["text"],
        json!(format!("[fd00::5]:2200 {blob}\n"))
    );
    let a = AgentConfig::parse(&agent_toml_text(&pinned), "agent.toml").expect("valid");
    assert_eq!(a.source.to_string(), "sftp://lap@[fd00::5]:2200/");

    // Without the key: a build-time error naming the source's host and port, not a run-time one.
    let unpinned = eval_agent(source);
    assert_failed(
        &unpinned,
        &[
            "serverHostKey is not set",
            "ssh-keyscan -p 2200 -t ed25519 fd00::5",
        ],
    );
    assert_eq!(
        unpinned["config"]["environment"]["etc"]["tiffin/known_hosts"],
        Value::Null
    );

    // A file source needs neither a key nor a signature policy.
    let local = eval_agent(r#"source = "file:///srv/tiffin/laptop";"#);
    assert_eq!(failed_assertions(&local), Vec::<String>::new());
    assert_eq!(
        local["config"]["environment"]["etc"]["tiffin/known_hosts"],
        Value::Null
    );
    let garbage = eval_agent(r#"source = "sftp://no-user-here/"; serverHostKey = "x";"#);
    assert_failed(&garbage, &["source = \"sftp://no-user-here/\"", "neither"]);
}

#[test]
fn agent_module_requires_a_trusted_key_or_allow_unsigned_and_writes_it() {
    if !have_nix() {
        return;
    }
    let server = format!(r#"server = "fleet.example.org"; serverHostKey = "{SERVER_KEY}";"#);
    let neither = eval_agent(&server);
    assert_failed(&neither, &["trustedKey is not set", "allowUnsigned = true"]);
    assert_eq!(failed_assertions(&neither).len(), 1);

    let unsigned = eval_agent(&format!("{server} allowUnsigned = true;"));
    assert_eq!(failed_assertions(&unsigned), Vec::<String>::new());
    let text = agent_toml_text(&unsigned);
    assert!(text.lines().any(|l| l == "allow_unsigned = true"), "{text}");
    assert!(text.lines().any(|l| l == "trusted_key = \"\""), "{text}");
    let a = AgentConfig::parse(&text, "agent.toml").expect("the agent reads allow_unsigned");
    assert!(a.allow_unsigned);

    let signed = eval_agent(&format!(
        "{server} trustedKey = \"/etc/tiffin/fleet-signing.pub\";"
    ));
    assert_eq!(failed_assertions(&signed), Vec::<String>::new());
    let text = agent_toml_text(&signed);
    assert!(!text.contains("allow_unsigned"), "{text}");
    let a = AgentConfig::parse(&text, "agent.toml").expect("valid agent.toml");
    assert_eq!(a.trusted_key, "/etc/tiffin/fleet-signing.pub");

    let relative = eval_agent(&format!("{server} trustedKey = \"fleet.pub\";"));
    assert_failed(&relative, &["trustedKey = \"fleet.pub\"", "absolute"]);
}

#[test]
fn agent_module_takes_an_https_source_only_with_a_trusted_key_and_writes_http_ca() {
    if !have_nix() {
        return;
    }
    let source = r#"source = "https://web.example.org/q3VzZXItcHJlZml4LW9mLWxhcHRvcA/";"#;
    let unsigned = eval_agent(&format!("{source} allowUnsigned = true;"));
    assert_failed(&unsigned, &["trustedKey is not set", "untrusted transport"]);
    let signed = eval_agent(&format!(
        "{source} trustedKey = \"/etc/tiffin/fleet.pub\"; httpCa = \"/etc/tiffin/ca.pem\";"
    ));
    assert_eq!(failed_assertions(&signed), Vec::<String>::new());
    let text = agent_toml_text(&signed);
    assert!(
        text.lines()
            .any(|l| l == "http_ca = \"/etc/tiffin/ca.pem\""),
        "{text}"
    );
    let a = AgentConfig::parse(&text, "agent.toml").expect("valid agent.toml");
    assert!(a.source.is_http());
    let relative = eval_agent(&format!(
        "{source} trustedKey = \"/etc/tiffin/fleet.pub\"; httpCa = \"ca.pem\";"
    ));
    assert_failed(&relative, &["httpCa = \"ca.pem\"", "absolute"]);
}

#[test]
fn agent_module_refuses_the_server_cache_with_a_trusted_key_unless_told() {
    if !have_nix() {
        return;
    }
    let base = format!(
        r#"server = "fleet.example.org"; serverHostKey = "{SERVER_KEY}"; trustedKey = "/etc/tiffin/fleet.pub";
           useServerCache = true; serverCachePublicKey = "fleet-1:abc=";"#
    );
    let refused = eval_agent(&base);
    assert_failed(
        &refused,
        &[
            "useServerCache with trustedKey",
            "serverCacheTrusted = true",
        ],
    );
    let told = eval_agent(&format!("{base} serverCacheTrusted = true;"));
    assert_eq!(failed_assertions(&told), Vec::<String>::new());
    assert_eq!(
        told["config"]["nix"]["settings"]["trusted-public-keys"],
        json!(["fleet-1:abc="])
    );
}

#[test]
fn an_http_trigger_off_loopback_is_refused_and_loopback_ones_are_bound_by_a_socket_unit() {
    if !have_nix() {
        return;
    }
    assert_eq!(
        eval_ok(
            r#"map lib.isLoopbackTrigger [ "127.0.0.1:9999" "127.3.2.1:80" "[::1]:9999"
                 "0.0.0.0:9999" "[::]:9999" "192.168.1.5:9999" "localhost:9999" "127.0.0.1:0"
                 "127.0.0.256:1" "127.0.0.1:65536" "127.0.0.1" "" ]"#
        ),
        json!([true, true, true, false, false, false, false, false, false, false, false, false])
    );
    let server = format!(
        r#"server = "fleet.example.org"; serverHostKey = "{SERVER_KEY}"; trustedKey = "/k.pub";"#
    );
    for bad in ["0.0.0.0:9999", "[::]:9999", "192.168.1.5:9999"] {
        let r = eval_agent(&format!("{server} httpTrigger = \"{bad}\";"));
        assert_failed(&r, &[&format!("httpTrigger = \"{bad}\""), "loopback"]);
    }

    let r = eval_agent(&format!("{server} httpTrigger = \"[::1]:9999\";"));
    assert_eq!(failed_assertions(&r), Vec::<String>::new());
    let c = &r["config"];
    let socket = &c["systemd"]["sockets"]["tiffin-agent-http"];
    assert_eq!(socket["listenStreams"], json!(["[::1]:9999"]));
    assert_eq!(socket["wantedBy"], json!(["sockets.target"]));
    assert_eq!(
        socket["socketConfig"]["Service"],
        json!("tiffin-agent.service")
    );
    assert_eq!(
        c["systemd"]["services"]["tiffin-agent"]["serviceConfig"]["Sockets"],
        json!("tiffin-agent-http.socket"),
        "the agent gets the port whenever it starts, not only when a connection starts it"
    );
    for dependency in ["wants", "after"] {
        assert!(
            c["systemd"]["services"]["tiffin-agent"][dependency]
                .as_array()
                .is_some_and(|d| d.contains(&json!("tiffin-agent-http.socket"))),
            "{dependency}"
        );
    }
    let a = AgentConfig::parse(&agent_toml_text(&r), "agent.toml").expect("valid");
    assert_eq!(
        a.http_trigger, "[::1]:9999",
        "the agent knows which fd it is"
    );

    let off = eval_agent(&format!("{server} httpTrigger = \"\";"));
    assert_eq!(failed_assertions(&off), Vec::<String>::new());
    assert_eq!(
        off["config"]["systemd"]["sockets"]["tiffin-agent-http"],
        Value::Null
    );
    assert_eq!(
        off["config"]["systemd"]["services"]["tiffin-agent"]["wants"],
        json!(["network-online.target"])
    );
    assert_eq!(
        off["config"]["systemd"]["services"]["tiffin-agent"]["serviceConfig"]["Sockets"],
        Value::Null
    );
}

#[test]
fn agent_module_writes_max_age_and_timeouts_only_when_set() {
    if !have_nix() {
        return;
    }
    let server = format!(
        r#"server = "fleet.example.org"; serverHostKey = "{SERVER_KEY}"; trustedKey = "/k.pub";"#
    );
    let unset = agent_toml_text(&eval_agent(&server));
    for key in ["max_age", "build_timeout", "activate_timeout"] {
        assert!(!unset.contains(key), "{key} written though unset:\n{unset}");
    }
    let set = eval_agent(&format!(
        r#"{server} maxAge = "30d"; buildTimeout = "2h"; activateTimeout = "10m";"#
    ));
    assert_eq!(failed_assertions(&set), Vec::<String>::new());
    let text = agent_toml_text(&set);
    let toml: toml::Value = toml::from_str(&text).expect("agent.toml is TOML");
    assert_eq!(toml["max_age"].as_str(), Some("30d"), "{text}");
    assert_eq!(toml["build_timeout"].as_str(), Some("2h"), "{text}");
    assert_eq!(toml["activate_timeout"].as_str(), Some("10m"), "{text}");
    // The agent itself reads them as written.
    let a =
        AgentConfig::parse(&text, "agent.toml").expect("the agent reads the module's agent.toml");
    assert_eq!(a.max_age, Some(std::time::Duration::from_secs(30 * 86400)));
    assert_eq!(a.build_timeout, std::time::Duration::from_secs(2 * 3600));
    assert_eq!(a.activate_timeout, std::time::Duration::from_secs(600));

    let bad = eval_agent(&format!(
        r#"{server} maxAge = "a month"; buildTimeout = "soon";"#
    ));
    assert_failed(&bad, &["maxAge = \"a month\" is not a duration"]);
    assert_failed(&bad, &["buildTimeout = \"soon\" is not a duration"]);
}

#[test]
fn agent_module_skips_the_build_time_check_only_in_a_cross_build() {
    if !have_nix() {
        return;
    }
    let options = format!(r#"{{ {SERVER_OPTIONS} serverHostKey = "{SERVER_KEY}"; }}"#);
    let source = |cross: bool| {
        eval_ok(&format!(
            "(import {} {{ module = {}; settings = {options}; system = {{ networking.hostName = \"laptop\"; }}; cross = {cross}; }}).config.environment.etc.\"tiffin/agent.toml\".source",
            fixture("eval-module.nix").display(),
            repo().join("packaging/nixos/agent.nix").display()
        ))
    };
    let native = source(false);
    assert!(
        native["script"]
            .as_str()
            .is_some_and(|s| s.contains("--check-config")),
        "{native}"
    );
    let cross = source(true);
    assert_eq!(cross["script"], Value::Null, "{cross}");
    assert!(cross["text"]
        .as_str()
        .is_some_and(|t| t.contains("host = \"laptop\"")));
}

/// The agent unit's preStart, with its absolute paths moved under `root`, run by a real shell.
fn run_prestart(script: &str, root: &Path) -> CmdOutput {
    let keygen = tool("ssh-keygen", "openssh-client").expect("ssh-keygen");
    let script = script
        .replace(
            "/var/lib/tiffin",
            &root.join("var/lib/tiffin").to_string_lossy(),
        )
        .replace("/etc/tiffin", &root.join("etc/tiffin").to_string_lossy())
        .replace(
            "/nix/store/openssh-system/bin/ssh-keygen",
            &keygen.to_string_lossy(),
        );
    run(Path::new("/bin/sh"), &["-ec", &script])
}

#[test]
fn agent_module_keeps_the_host_key_out_of_etc_and_moves_an_old_one() {
    if !have_nix() || tool("ssh-keygen", "openssh-client").is_none() {
        return;
    }
    let r = eval_agent(&format!(
        r#"server = "fleet.example.org"; serverHostKey = "{SERVER_KEY}"; trustedKey = "/k.pub";"#
    ));
    let c = &r["config"];
    let a = AgentConfig::parse(&agent_toml_text(&r), "agent.toml").expect("valid");
    assert_eq!(a.identity, PathBuf::from("/var/lib/tiffin/id_ed25519"));
    let rules = c["systemd"]["tmpfiles"]["rules"].to_string();
    assert!(
        !rules.contains("/etc"),
        "nothing is created under /etc: {rules}"
    );
    let script = c["systemd"]["services"]["tiffin-agent"]["preStart"]
        .as_str()
        .expect("a preStart")
        .to_string();

    // A fresh machine: the key is created in the state directory.
    let fresh = tempfile::tempdir().expect("temp dir");
    let out = run_prestart(&script, fresh.path());
    assert!(out.success(), "{}", out.describe_failure());
    let key = fresh.path().join("var/lib/tiffin/id_ed25519");
    assert!(key.is_file() && key.with_extension("pub").is_file());
    assert!(out.stdout.contains("[hosts.laptop]"), "{}", out.stdout);
    assert!(!fresh.path().join("etc").exists());

    // A machine set up by an earlier version: its key (the one in fleet.toml) moves, unchanged.
    let upgraded = tempfile::tempdir().expect("temp dir");
    let old_dir = upgraded.path().join("etc/tiffin");
    std::fs::create_dir_all(&old_dir).expect("mkdir");
    std::fs::write(old_dir.join("id_ed25519"), "old private\n").expect("write");
    std::fs::write(old_dir.join("id_ed25519.pub"), "old public\n").expect("write");
    let out = run_prestart(&script, upgraded.path());
    assert!(out.success(), "{}", out.describe_failure());
    let moved = upgraded.path().join("var/lib/tiffin/id_ed25519");
    assert_eq!(
        std::fs::read_to_string(&moved).expect("moved"),
        "old private\n"
    );
    assert_eq!(
        std::fs::read_to_string(moved.with_extension("pub")).expect("moved"),
        "old public\n"
    );
    assert!(
        !old_dir.join("id_ed25519").exists(),
        "the old copy is removed"
    );
    assert!(out.stdout.contains("moved the host key"), "{}", out.stdout);
}

#[test]
fn flake_offers_checks_an_overlay_and_the_modules_and_its_example_passes_their_assertions() {
    if !have_nix() {
        return;
    }
    let f = eval_ok(&format!("import {}", fixture("eval-flake.nix").display()));
    assert_eq!(f["checkSystems"], json!(["aarch64-linux", "x86_64-linux"]));
    let checks = &f["checks"];
    assert_eq!(checks["package"]["args"], json!({ "withTray": false }));
    assert_eq!(checks["tray-package"]["args"], json!({}));
    let evaluated: Value = serde_json::from_str(
        checks["nixos-modules"]["text"]
            .as_str()
            .expect("the eval check's text"),
    )
    .expect("the stand-in's record of nixosSystem");
    assert_eq!(
        evaluated,
        json!({ "system": "x86_64-linux",
                "modules": [["server.nix", "agent.nix", "tray.nix"], "example-system.nix"] })
    );
    assert_eq!(
        f["overlay"],
        json!({ "tiffin": { "package": "package.nix", "args": {} },
                "tiffin-headless": { "package": "package.nix", "args": { "withTray": false } } })
    );
    assert_eq!(
        f["moduleNames"],
        json!(["agent", "default", "server", "tray"])
    );
    assert_eq!(
        f["failedAssertions"],
        json!({ "server": [], "agent": [], "tray": [] })
    );
}

#[test]
fn option_texts_given_as_nix_expressions_are_nix_and_prose_is_markdown() {
    let Some(nix) = tool("nix-instantiate", "nix-bin") else {
        return;
    };
    let mut seen = 0;
    for (module, settings) in [
        (
            "server.nix",
            format!("{{ fleetFile = {}; }}", fixture("fleet.toml").display()),
        ),
        ("agent.nix", "{ }".to_string()),
        ("tray.nix", "{ }".to_string()),
    ] {
        let r = eval_module(module, &settings, "{ }");
        let literals = r["literalExpressions"].as_array().expect("a list").clone();
        for l in literals {
            let expr = l["expression"].as_str().expect("text");
            // The names a module's expression may use; anything else is an undefined variable.
            let module_scope = format!("{{ config, pkgs, lib, ... }}: {expr}");
            let out = run(&nix, &["--parse", "--expr", &module_scope]);
            assert!(
                out.success(),
                "{module}: {} {} = lib.literalExpression {expr:?} is not Nix; prose goes in lib.literalMD",
                l["option"],
                l["field"]
            );
            seen += 1;
        }
    }
    assert!(
        seen >= 2,
        "no literalExpression was found: the test looks in the wrong place"
    );
}

use crate::fleet_support;

/// (uid, gid, mode) of each path, without following symlinks.
fn stat_all(paths: &[PathBuf]) -> Vec<(String, u32, u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    paths
        .iter()
        .map(|p| {
            let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.display().to_string(), m.uid(), m.gid(), m.mode() & 0o7777)
        })
        .collect()
}

#[test]
fn the_server_modules_tmpfiles_and_publish_agree_and_hosts_cannot_read_each_other() {
    if !fleet_support::require_root("tmpfiles layout test") || !have_nix() {
        return;
    }
    let (Some(tmpfiles), Some(runuser)) = (
        tool("systemd-tmpfiles", "systemd"),
        tool("runuser", "util-linux"),
    ) else {
        return;
    };
    // Host users as the module makes them: each with a primary group of its own.
    let f = fleet_support::TestFleet::new();
    f.write_config(&[("alpha", ""), ("beta", "")], "");
    for h in ["alpha", "beta"] {
        f.write(&format!("hosts/{h}/configuration.nix"), "{ }\n");
    }
    // `write_config` made the fleet's signing key, as `fleet init` does.
    assert!(f.repo().join("keys/fleet-signing.key").is_file());

    // What the server does at boot: the module's tmpfiles rules for this fleet.toml.
    let rules = eval_ok(&format!(
        "lib.tmpfilesRules (lib.readFleet {})",
        f.repo().join("fleet.toml").display()
    ));
    let rules: Vec<String> = serde_json::from_value(rules).expect("a list of rules");
    let rules_file = f.tmp.path().join("tiffin.conf");
    std::fs::write(&rules_file, rules.join("\n") + "\n").expect("writing the rules");
    let apply = || {
        let out = run(&tmpfiles, &["--create", &rules_file.to_string_lossy()]);
        assert!(out.success(), "{}", out.describe_failure());
    };
    apply();
    let layout: Vec<PathBuf> = std::iter::once(f.chroot())
        .chain(["alpha", "beta"].iter().flat_map(|h| {
            let d = f.host_pub(h);
            [d.join("gens"), d.join("logs"), d]
        }))
        .collect();
    let booted = stat_all(&layout);

    let r = tiffin::fleet::publish(
        &f.repo(),
        &f.config(),
        &tiffin::fleet::PublishOptions::default(),
    )
    .expect("publish");
    assert_eq!(r.failed(), 0, "{:?}", r.hosts);
    // publish changed nothing tmpfiles made, and tmpfiles at the next boot undoes nothing of
    // publish's.
    assert_eq!(stat_all(&layout), booted, "publish changed the layout");
    let alpha_gen = f.host_pub("alpha").join("gens/1");
    let published = stat_all(std::slice::from_ref(&alpha_gen));
    apply();
    assert_eq!(stat_all(&layout), booted, "tmpfiles changed the layout");
    assert_eq!(stat_all(std::slice::from_ref(&alpha_gen)), published);

    // The publication is readable by its own host's user only.
    let config = f.config();
    let user = |h: &str| config.hosts[h].user_or_default(h).to_string();
    let list = |u: &str| {
        run(
            &runuser,
            &["-u", u, "--", "ls", &alpha_gen.to_string_lossy()],
        )
    };
    let own = list(&user("alpha"));
    assert!(own.success(), "alpha's user: {}", own.describe_failure());
    let other = list(&user("beta"));
    assert!(
        !other.success() && other.stderr.contains("Permission denied"),
        "beta's user read alpha's publication: {}",
        other.describe_failure()
    );
}

#[test]
fn the_fleet_toml_of_fleet_init_with_its_secrets_table_is_read_by_the_server_module() {
    if !have_nix() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    tiffin::fleet::init::init(t.path()).expect("fleet init");
    let fleet = eval_ok(&format!(
        "(lib.readFleet {}).hosts",
        t.path().join("fleet.toml").display()
    ));
    assert!(fleet.to_string().contains("example"), "{fleet}");
}

#[test]
fn server_module_runs_fleet_watch_as_a_unit_with_its_options_quoted() {
    if !have_nix() {
        return;
    }
    let fleet = fixture("fleet.toml");
    let r = eval_module(
        "server.nix",
        &format!(
            "{{ enable = true; fleetFile = {}; watch = {{ enable = true; fleetDir = \"/var/lib/tiffin/fleet\"; alertCommand = \"mail -s 'tiffin alert' admin\"; metrics = \"127.0.0.1:9102\"; soak = \"30m\"; }}; }}",
            fleet.display()
        ),
        "{ }",
    );
    assert_eq!(failed_assertions(&r), Vec::<String>::new());
    let unit = &r["config"]["systemd"]["services"]["tiffin-fleet-watch"];
    let exec = unit["serviceConfig"]["ExecStart"]
        .as_str()
        .unwrap_or_else(|| panic!("{unit}"));
    assert!(exec.ends_with("/bin/tiffin 'fleet' '--fleet' '/var/lib/tiffin/fleet' 'watch' '--alert-command' 'mail -s '\\''tiffin alert'\\'' admin' '--metrics' '127.0.0.1:9102' '--soak' '30m'"), "{exec}");
    assert_eq!(unit["serviceConfig"]["Restart"], json!("always"));
    assert_eq!(unit["wantedBy"], json!(["multi-user.target"]));
    // Off by default; on without a repository it says what to set.
    let off = eval_module(
        "server.nix",
        &format!("{{ enable = true; fleetFile = {}; }}", fleet.display()),
        "{ }",
    );
    assert!(off["config"]["systemd"]["services"]
        .get("tiffin-fleet-watch")
        .is_none());
    let r = eval_module(
        "server.nix",
        &format!(
            "{{ enable = true; fleetFile = {}; watch.enable = true; }}",
            fleet.display()
        ),
        "{ }",
    );
    assert_failed(&r, &["watch.fleetDir", "absolute path"]);
}

#[test]
fn a_fleet_toml_with_waves_and_a_rollout_table_is_accepted_by_the_server_module() {
    if !have_nix() {
        return;
    }
    let text = format!(
        "chroot = \"/srv/tiffin\"\n[rollout]\nsoak = \"10m\"\n\n[hosts.laptop]\nkey = \"{LAPTOP_KEY}\"\nwave = 0\n"
    );
    tiffin::config::FleetConfig::parse(&text, "fleet.toml").expect("tiffin accepts it");
    let v = eval_ok(&format!(
        "(lib.checkFleet (builtins.fromTOML {})).hosts",
        serde_json::to_string(&text).unwrap()
    ));
    assert_eq!(v[0]["name"], json!("laptop"), "{v}");
}
