//! The read-only `http(s)://` source against a real nginx and no sshd at all: `tiffin fleet
//! publish` with `[http] root` and the host's `http_prefix` keeps the web root nginx serves;
//! `tiffin agent --once` (the NixOS stand-in on real Nix; without Nix, outside CI, the fake)
//! fetches a signed, sealed publication from `http://127.0.0.1:<port>/<prefix>/` and installs
//! it; a file altered on the web server is refused by its sha256 before anything is installed;
//! the no-change check is one conditional GET answered 304 on a kept-alive connection (counted
//! in nginx's access log); over https the pinned CA (`http_ca`) is the only one accepted.
//!
//! nginx's workers run as `nobody` with the host's group: what docs/serving.md asks of a web
//! server. Needs root, nginx, ssh-keygen and openssl (fails under `CI=true` without them).

use crate::pipeline_support::{
    default_is_real, install_fake_nixos, install_real_nixos, knob_flake_nix, system_section,
    FIRST_CONFIGURATION,
};
use crate::support;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::nginx::{self, Nginx, NginxOptions};
use support::publication::{FleetHost, FleetRepo};
use tiffin::agent::pipeline::fetch::{sync_trusted, SyncOutcome, TrustPolicy};
use tiffin::config::{AgentConfig, FleetConfig};
use tiffin::runner::Runner;

const HOST: &str = "laptop";
/// The host's unguessable path on the web server.
const PREFIX: &str = "q3VzZXItcHJlZml4LW9mLWxhcHRvcA";

fn missing() -> Option<String> {
    nginx::missing().or_else(|| {
        [
            "/usr/bin/ssh-keygen",
            "/usr/sbin/useradd",
            "/usr/bin/openssl",
        ]
        .iter()
        .find(|t| !Path::new(t).exists())
        .map(|t| format!("{t} is missing (openssh-client, passwd, openssl)"))
    })
}

/// The admin's side: a host user (its group owns the publication), a fleet repository with
/// sealing, `[http] root` and the host's prefix, and nginx serving that root.
struct Web {
    dir: tempfile::TempDir,
    user: String,
    fleet: FleetRepo,
    /// The agent's SSH key (sealed files are opened with it).
    identity: PathBuf,
    nginx: Option<Nginx>,
}

impl Web {
    fn new(test: &str) -> Option<Self> {
        if !support::prerequisite(test, missing()) {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("tiffin-http-")
            .tempdir()
            .unwrap();
        nginx::open_to_workers(dir.path());
        let user = format!("tfhttp-{}", support::random_suffix(3));
        let r = Runner::new();
        let add = [
            "-r",
            "-M",
            "-d",
            "/",
            "-s",
            "/usr/sbin/nologin",
            "-U",
            &user,
        ];
        tiffin::demo::sshd::run_retrying(&r, "useradd", &add).unwrap();
        let identity = dir.path().join("id_laptop");
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", HOST, "-f"])
            .arg(&identity)
            .status()
            .unwrap();
        assert!(st.success());
        let key = fs::read_to_string(identity.with_extension("pub")).unwrap();
        let chroot = dir.path().join("chroot");
        fs::create_dir_all(&chroot).unwrap();
        let host = FleetHost {
            name: HOST,
            user: &user,
            key: key.trim(),
        };
        let mut fleet = FleetRepo::create(&dir.path().join("fleet"), &chroot, &[host]);
        let toml = fleet.dir.join("fleet.toml");
        let mut text = fs::read_to_string(&toml).unwrap();
        text.push_str(&format!(
            "http_prefix = {PREFIX:?}\n\n[secrets]\nseal = true\n\n[http]\nroot = {:?}\n",
            dir.path().join("web").display().to_string()
        ));
        fs::write(&toml, text).unwrap();
        fleet.config = FleetConfig::load(&fleet.dir).unwrap();
        Some(Self {
            dir,
            user,
            fleet,
            identity,
            nginx: None,
        })
    }

    /// Starts nginx on the web root (https with `tls`).
    fn serve(&mut self, tls: Option<(&Path, &Path)>) -> &Nginx {
        self.nginx = Some(Nginx::start(&NginxOptions {
            root: &self.dir.path().join("web"),
            user: "nobody",
            group: &self.user,
            tls,
        }));
        self.nginx.as_ref().unwrap()
    }

    fn nginx(&self) -> &Nginx {
        self.nginx.as_ref().expect("serving")
    }

    fn write(&self, rel: &str, content: &[u8]) {
        let p = self.fleet.host_dir(HOST).join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    fn publish(&self) -> u64 {
        self.fleet.publish(HOST)
    }

    /// agent.toml's top level for this web server (`url` is the source).
    fn agent_toml(&self, url: &str, state: &Path, extra: &str) -> String {
        format!(
            "host = \"{HOST}\"\nsource = \"{url}\"\nidentity = {:?}\ntrusted_key = {:?}\n\
             state_dir = {:?}\nsocket = \"{}/agent.sock\"\nhttp_trigger = \"\"\n{extra}\n",
            self.identity.display().to_string(),
            self.fleet.public_key().display().to_string(),
            state.display().to_string(),
            state.display(),
        )
    }

    /// One in-process check as the agent's daemon makes it (the client outlives the source).
    fn check(&self, config: &AgentConfig) -> Result<SyncOutcome, String> {
        let trust = TrustPolicy::from_config(config, None)?;
        let mut s = tiffin::source::open(config).map_err(|e| e.to_string())?;
        sync_trusted(s.as_mut(), &config.state_dir, HOST, &trust, &mut |_| {})
            .map_err(|e| e.to_string())
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        self.nginx.take();
        let r = Runner::new();
        if let Err(e) = tiffin::demo::sshd::run_retrying(&r, "userdel", &[&self.user]) {
            eprintln!("cleanup: {e:#}");
        }
    }
}

/// The machine's side: a NixOS (stand-in or fake) whose agent reads the web server.
struct Machine {
    root: PathBuf,
    files_root: PathBuf,
    config_path: PathBuf,
}

impl Machine {
    fn new(web: &Web) -> Self {
        let d = web.dir.path().join("machine");
        let (root, files_root, state) = (d.join("nixos"), d.join("fsroot"), d.join("state"));
        for p in [&root, &files_root] {
            fs::create_dir_all(p).unwrap();
        }
        let repo = web.fleet.host_dir(HOST);
        let none = d.join("no-file-publication");
        if default_is_real() {
            fs::write(repo.join("flake.nix"), knob_flake_nix(HOST)).unwrap();
            fs::write(repo.join("configuration.nix"), FIRST_CONFIGURATION).unwrap();
            install_real_nixos(&root, &none, &repo);
        } else {
            fs::write(repo.join("flake.nix"), "{ outputs = { self }: { }; }\n").unwrap();
            fs::write(repo.join("configuration.nix"), "{ ... }: { }\n").unwrap();
            install_fake_nixos(&root, &none, &repo, HOST);
        }
        let url = web.nginx().url(&format!("{PREFIX}/"));
        let text = format!(
            "{}verify_timeout = \"3s\"\n\n{}",
            web.agent_toml(&url, &state, ""),
            system_section(&root, &files_root)
        );
        let config_path = d.join("agent.toml");
        fs::write(&config_path, text).unwrap();
        Self {
            root,
            files_root,
            config_path,
        }
    }

    /// `tiffin agent --once`: its exit code and what it printed.
    fn run_once(&self) -> (i32, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_tiffin"))
            .args(["agent", "--once", "--config"])
            .arg(&self.config_path)
            .env("RUST_LOG", "warn")
            .env("TIFFIN_STANDIN_ROOT", &self.root)
            .output()
            .expect("running tiffin");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    fn installed(&self, rel: &str) -> Option<Vec<u8>> {
        fs::read(self.files_root.join(rel)).ok()
    }
}

/// The status of a plain GET.
fn http_status(url: &str) -> u16 {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    agent.get(url).call().unwrap().status().as_u16()
}

const RULES: &str = "[\"etc/app/secret\"]\nmode = \"0600\"\n";

#[test]
fn a_full_cycle_over_nginx_alone_installs_a_signed_sealed_publication_and_refuses_a_tampered_file()
{
    let Some(mut web) = Web::new("http_source") else {
        return;
    };
    web.serve(None);
    let m = Machine::new(&web);
    web.write("files/etc/app/secret", b"token=first\n");
    web.write("files/etc/motd", b"hello\n");
    web.write("files.toml", RULES.as_bytes());
    assert_eq!(web.publish(), 1);
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}\n{}", web.nginx().error_log());
    assert_eq!(m.installed("etc/app/secret").unwrap(), b"token=first\n");
    assert_eq!(m.installed("etc/motd").unwrap(), b"hello\n");
    // Sealed: no byte of the secret on the web server's disk.
    let served = web.dir.path().join("chroot").join(HOST).join("gens/1/tree");
    let sealed = fs::read(served.join("files/etc/app/secret")).unwrap();
    assert!(!sealed.windows(5).any(|w| w == b"first"));
    // Every request went to the host's prefix; logs/ was never asked for.
    let log = web.nginx().access_log();
    assert!(
        log.iter()
            .all(|a| a.uri.starts_with(&format!("/{PREFIX}/gens/"))
                || a.uri == format!("/{PREFIX}/current.txt")),
        "{log:?}"
    );

    // The next generation, one of its files altered on the server (a new inode, as an attacker
    // replacing it would make): refused, naming the file; nothing of it installed.
    web.write("files/etc/app/secret", b"token=second\n");
    web.write("files/etc/motd", b"hello again\n");
    assert_eq!(web.publish(), 2);
    let motd = web
        .dir
        .path()
        .join("chroot")
        .join(HOST)
        .join("gens/2/tree/files/etc/motd");
    fs::remove_file(&motd).unwrap();
    fs::write(&motd, b"hello agaiN\n").unwrap();
    let (code, out) = m.run_once();
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("files/etc/motd"), "{out}");
    assert_eq!(m.installed("etc/motd").unwrap(), b"hello\n");
    assert_eq!(m.installed("etc/app/secret").unwrap(), b"token=first\n");
}

#[test]
fn a_no_change_check_is_one_conditional_get_answered_304_on_the_same_connection() {
    let Some(mut web) = Web::new("http_source") else {
        return;
    };
    web.write("configuration.nix", b"{ ... }: { }\n");
    web.write("files/etc/motd", b"hello\n");
    assert_eq!(web.publish(), 1);
    web.serve(None);
    let state = web.dir.path().join("state");
    let url = web.nginx().url(&format!("{PREFIX}/"));
    let config = AgentConfig::parse(&web.agent_toml(&url, &state, ""), "agent.toml").unwrap();
    let first = web.check(&config).unwrap();
    assert!(matches!(first, SyncOutcome::Fetched { .. }), "{first:?}");
    let before = web.nginx().access_log();
    let unchanged = web.check(&config).unwrap();
    assert!(matches!(unchanged, SyncOutcome::Unchanged(_)));
    let after = web.nginx().access_log();
    assert_eq!(after.len(), before.len() + 1, "{after:?}");
    let check = after.last().unwrap();
    assert_eq!(
        (check.method.as_str(), check.uri.as_str(), check.status),
        ("GET", format!("/{PREFIX}/current.txt").as_str(), 304),
        "{after:?}"
    );
    assert_eq!(check.body_bytes, 0);
    // Kept alive: the same connection as the fetch before it.
    assert_eq!(check.connection, before.last().unwrap().connection);

    // Nothing but current.txt and gens/ is reachable: not the host's logs/ or backup/, not the
    // list of prefixes.
    let publication = web.dir.path().join("chroot").join(HOST);
    fs::write(publication.join("logs/seen.json"), b"{}").unwrap();
    fs::create_dir_all(publication.join("backup")).unwrap();
    fs::write(publication.join("backup/config"), b"x").unwrap();
    for path in [
        format!("{PREFIX}/logs/seen.json"),
        format!("{PREFIX}/backup/config"),
        format!("{PREFIX}/current"),
        String::new(),
    ] {
        let status = http_status(&web.nginx().url(&path));
        assert!(status == 404 || status == 403, "{path}: HTTP {status}");
    }
    assert_eq!(
        http_status(&web.nginx().url(&format!("{PREFIX}/current.txt"))),
        200
    );

    // A new generation is seen at once: the ETag changed.
    web.write("files/etc/motd", b"hello again\n");
    assert_eq!(web.publish(), 2);
    let next = web.check(&config).unwrap();
    assert!(matches!(next, SyncOutcome::Fetched { ref local, .. } if local.generation == 2));
}

#[test]
fn https_accepts_only_the_pinned_ca() {
    let Some(mut web) = Web::new("http_source") else {
        return;
    };
    web.write("files/etc/motd", b"hello\n");
    assert_eq!(web.publish(), 1);
    let tls = web.dir.path().join("tls");
    fs::create_dir_all(&tls).unwrap();
    let (ca, cert, key) = nginx::make_tls(&tls, "fleet");
    let (other_ca, _, _) = nginx::make_tls(&tls, "other");
    web.serve(Some((&cert, &key)));
    let url = web.nginx().url(&format!("{PREFIX}/"));
    assert!(url.starts_with("https://"));
    let config_with = |ca: Option<&Path>, state: &str| {
        let extra = ca.map_or(String::new(), |p| {
            format!("http_ca = {:?}", p.display().to_string())
        });
        let text = web.agent_toml(&url, &web.dir.path().join(state), &extra);
        AgentConfig::parse(&text, "agent.toml").unwrap()
    };
    let ok = web.check(&config_with(Some(&ca), "state-ok")).unwrap();
    assert!(matches!(ok, SyncOutcome::Fetched { .. }), "{ok:?}");
    let e = web
        .check(&config_with(Some(&other_ca), "state-other"))
        .unwrap_err();
    assert!(
        e.contains("TLS") && e.contains(&other_ca.display().to_string()),
        "{e}"
    );
    let e = web.check(&config_with(None, "state-system")).unwrap_err();
    assert!(e.contains("TLS") && e.contains("system's root"), "{e}");
}
