//! Signed publications end to end: `tiffin fleet keygen` and `publish` through the real binary,
//! publications made by the library's `fleet::publish` into a `file://` chroot, and the agent's
//! real pipeline on real Nix (the NixOS stand-in, a real profile), with and without
//! `trusted_key`. (Without Nix, outside CI only, the fake NixOS of assets/fake-nixos stands in.)

use crate::fleet_support;
use crate::pipeline_support;

use fleet_support::TestFleet;
use pipeline_support::{
    default_is_real, in_process, install_fake_nixos, install_real_nixos, system_section,
};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tiffin::agent::daemon::status_cell::StatusCell;
use tiffin::agent::Pipeline;
use tiffin::cycle::CycleRequest;
use tiffin::fleet::PublishOptions;
use tiffin::manifest::{tree_hash, Manifest};
use tiffin::sign::{PublicKey, SecretKey};
use tiffin::status::{AgentStatus, CheckResult, Outcome, PublicationNote};

const HOST: &str = "laptop";

fn tiffin(args: &[&str], fleet: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tiffin"))
        .args(args)
        .arg("--fleet")
        .arg(fleet)
        .output()
        .expect("run tiffin")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A fleet repository with one host, its chroot publication, and that host: its NixOS (real Nix
/// with the stand-in; the fake when Nix is missing outside CI) and an agent state directory, all
/// under one temp dir.
struct Site {
    fleet: TestFleet,
    nixos: PathBuf,
    state: PathBuf,
    files_root: PathBuf,
    initial_system: PathBuf,
}

impl Site {
    /// `top` goes at the top of fleet.toml (e.g. `signing_key = …`).
    fn new(top: &str) -> Self {
        let fleet = TestFleet::new();
        fleet.write_config(&[(HOST, "")], top);
        let real = default_is_real();
        let flake = if real {
            crate::real_nix::flake_nix(HOST)
        } else {
            "{ outputs = { self }: { }; }\n".to_string()
        };
        fleet.write(&format!("hosts/{HOST}/flake.nix"), &flake);
        fleet.write(&format!("hosts/{HOST}/configuration.nix"), "{ ... }: { }\n");
        let dir = fleet.tmp.path().to_path_buf();
        let (nixos, state, files_root) = (dir.join("nixos"), dir.join("state"), dir.join("fsroot"));
        fs::create_dir_all(&files_root).unwrap();
        let publication = fleet.host_pub(HOST);
        let tree = fleet.repo().join(format!("hosts/{HOST}"));
        let initial_system = if real {
            install_real_nixos(&nixos, &publication, &tree)
        } else {
            install_fake_nixos(&nixos, &publication, &tree, HOST)
        };
        Self {
            fleet,
            nixos,
            state,
            files_root,
            initial_system,
        }
    }

    fn publication(&self) -> PathBuf {
        self.fleet.host_pub(HOST)
    }

    /// Changes the host's configuration so that the next publish makes a new generation.
    fn change(&self, n: u32) {
        self.fleet.write(
            &format!("hosts/{HOST}/configuration.nix"),
            &format!("{{ ... }}: {{ networking.hostName = \"laptop\"; x = {n}; }}\n"),
        );
    }

    /// `fleet::publish` (the library, as `tiffin fleet publish` runs it); returns the live
    /// generation.
    fn publish(&self) -> u64 {
        let report = tiffin::fleet::publish(
            &self.fleet.repo(),
            &self.fleet.config(),
            &PublishOptions::default(),
        )
        .expect("publish");
        let h = &report.hosts[0];
        assert!(!h.failed(), "{:?}", h.result);
        h.generation().expect("a live generation")
    }

    /// `fleet::publish --unsigned`; returns the live generation.
    fn publish_unsigned(&self) -> u64 {
        let report = tiffin::fleet::publish(
            &self.fleet.repo(),
            &self.fleet.config(),
            &PublishOptions {
                unsigned: true,
                ..PublishOptions::default()
            },
        )
        .expect("publish --unsigned");
        let h = &report.hosts[0];
        assert!(!h.failed(), "{:?}", h.result);
        h.generation().expect("a live generation")
    }

    fn manifest_path(&self, g: u64) -> PathBuf {
        self.publication().join(format!("gens/{g}/manifest.json"))
    }

    fn manifest(&self, g: u64) -> Manifest {
        let p = self.manifest_path(g);
        Manifest::parse(&fs::read(&p).unwrap(), &p.display().to_string()).unwrap()
    }

    /// Writes agent.toml; `trusted_key` is its value (`""`: none).
    fn agent_config(&self, trusted_key: &str) -> PathBuf {
        self.agent_config_with(trusted_key, "")
    }

    /// [`Site::agent_config`] with `extra` top-level lines.
    fn agent_config_with(&self, trusted_key: &str, extra: &str) -> PathBuf {
        let path = self.fleet.tmp.path().join("agent.toml");
        fs::write(
            &path,
            format!(
                "host = \"{HOST}\"\nsource = \"file://{}\"\nstate_dir = \"{}\"\nsocket = \"{}/agent.sock\"\nhttp_trigger = \"\"\nverify_timeout = \"2s\"\ntrusted_key = \"{trusted_key}\"\n{extra}\n\n{}",
                self.publication().display(),
                self.state.display(),
                self.state.display(),
                system_section(&self.nixos, &self.files_root),
            ),
        )
        .unwrap();
        path
    }

    /// One agent cycle (an "Update now") through the library's pipeline; returns its outcome
    /// and the status it left.
    fn cycle(
        &self,
        trusted_key: &str,
        req: CycleRequest,
    ) -> (Outcome, Option<String>, AgentStatus) {
        self.cycle_with(trusted_key, "", req)
    }

    /// [`Site::cycle`] with `extra` lines in agent.toml.
    fn cycle_with(
        &self,
        trusted_key: &str,
        extra: &str,
        req: CycleRequest,
    ) -> (Outcome, Option<String>, AgentStatus) {
        let config = tiffin::config::AgentConfig::load(&self.agent_config_with(trusted_key, extra))
            .expect("agent.toml");
        let _one_at_a_time = in_process(&self.nixos);
        let mut p =
            Pipeline::new(config, StatusCell::new(AgentStatus::default())).expect("pipeline");
        let r = p.run_cycle(req);
        (r.outcome, r.message, p.status().get())
    }

    fn running(&self) -> PathBuf {
        fs::canonicalize(self.nixos.join("run/current-system")).unwrap()
    }

    fn state_json(&self) -> serde_json::Value {
        serde_json::from_slice(&fs::read(self.state.join("state.json")).unwrap()).unwrap()
    }

    /// Objects the agent downloaded into its content store.
    fn downloaded(&self) -> usize {
        fs::read_dir(self.state.join("store"))
            .map(|rd| rd.count())
            .unwrap_or(0)
    }

    /// Points the server's `current` at generation `g`, as a compromised server would.
    fn point_current_at(&self, g: u64) {
        let link = self.publication().join("current");
        tiffin::fsutil::atomic_symlink(Path::new(&format!("gens/{g}")), &link).unwrap();
    }
}

/// A key pair made with the library, its public half written as a file.
fn key_pair(dir: &Path, name: &str) -> (SecretKey, PathBuf) {
    let k = SecretKey::generate().unwrap();
    let public = k
        .save(&dir.join(format!("{name}.key")), name, false)
        .unwrap();
    (k, public)
}

/// Asserts that a refused cycle changed nothing on the machine and said why, naming `needles`.
fn assert_refused(
    site: &Site,
    (outcome, message, status): &(Outcome, Option<String>, AgentStatus),
    running: &Path,
    needles: &[&str],
) {
    assert_eq!(*outcome, Outcome::Failed, "{message:?}");
    let message = message.clone().unwrap_or_default();
    for n in needles {
        assert!(message.contains(n), "{n:?} missing from: {message}");
    }
    let check = status.last_check.clone().expect("a last check");
    assert_eq!(check.result, CheckResult::Failed);
    assert_eq!(check.message.as_deref(), Some(message.as_str()));
    assert_eq!(
        site.running(),
        running,
        "the running system must not change"
    );
}

#[test]
fn keygen_writes_a_0600_secret_key_prints_the_trusted_key_line_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("fleet");
    let o = tiffin(&["fleet", "init", repo.to_str().unwrap()], tmp.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let gitignore = fs::read_to_string(repo.join(".gitignore")).unwrap();
    assert!(gitignore.lines().any(|l| l == "/keys/*.key"), "{gitignore}");
    // `fleet init` made a key already: keygen keeps it, then makes one where there is none.
    let o = tiffin(&["fleet", "keygen"], &repo);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    fs::remove_dir_all(repo.join("keys")).unwrap();

    let o = tiffin(&["fleet", "keygen"], &repo);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let secret = repo.join("keys/fleet-signing.key");
    let public = repo.join("keys/fleet-signing.pub");
    let mode = fs::metadata(&secret).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "secret key mode {mode:o}");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        out.contains("trusted_key = \"/etc/tiffin/fleet-signing.pub\""),
        "{out}"
    );
    let public_line = fs::read_to_string(&public).unwrap();
    assert!(out.contains(public_line.trim()), "{out}");
    let key = PublicKey::load(&public).unwrap();
    assert_eq!(SecretKey::load(&secret).unwrap().public(), key);

    let before = fs::read(&secret).unwrap();
    let o = tiffin(&["fleet", "keygen"], &repo);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("fleet-signing.key: already exists") && text(&o).contains("--force"),
        "{}",
        text(&o)
    );
    assert_eq!(fs::read(&secret).unwrap(), before, "the key must survive");

    let o = tiffin(&["fleet", "keygen", "--force"], &repo);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // The copy `fleet init` made for the hosts' NixOS module follows the new key.
    assert_eq!(
        fs::read_to_string(repo.join("common/fleet-signing.pub")).unwrap(),
        fs::read_to_string(&public).unwrap()
    );
    assert_ne!(
        fs::read(&secret).unwrap(),
        before,
        "--force makes a new key"
    );
    assert_ne!(PublicKey::load(&public).unwrap(), key);
}

#[test]
fn publish_without_a_key_is_refused_unless_unsigned_and_a_new_key_resigns_the_live_generation() {
    let site = Site::new("");
    fs::remove_dir_all(site.fleet.repo().join("keys")).unwrap();
    // No key: refused, saying how to make one or how to publish unsigned on purpose.
    let o = tiffin(&["fleet", "publish"], &site.fleet.repo());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    for needle in [
        "no signing key",
        "keys/fleet-signing.key",
        "tiffin fleet keygen",
        "--unsigned",
    ] {
        assert!(text(&o).contains(needle), "{needle:?}: {}", text(&o));
    }
    assert_eq!(site.fleet.current(HOST), None, "nothing published");
    // `--unsigned`: published unsigned, with a warning.
    let o = tiffin(&["fleet", "publish", "--unsigned"], &site.fleet.repo());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("--unsigned") && text(&o).contains("allow_unsigned = true"),
        "{}",
        text(&o)
    );
    assert_eq!(site.manifest(1).signature, None);

    let o = tiffin(&["fleet", "keygen"], &site.fleet.repo());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let key = PublicKey::load(&site.fleet.repo().join("keys/fleet-signing.pub")).unwrap();
    // Same content, but the live generation is not signed by the key: a signed one replaces it.
    let o = tiffin(&["fleet", "publish"], &site.fleet.repo());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(site.fleet.current(HOST), Some(2));
    key.verify_manifest(&site.manifest(2)).unwrap();
    assert!(site.manifest(2).signed_at.is_some());
    // Signed and unchanged: nothing new, and a fresh signature is not rewritten.
    let before = fs::read(site.manifest_path(2)).unwrap();
    let o = tiffin(&["fleet", "publish"], &site.fleet.repo());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(site.fleet.current(HOST), Some(2));
    assert_eq!(fs::read(site.manifest_path(2)).unwrap(), before);

    site.change(1);
    assert_eq!(site.publish(), 3);
    key.verify_manifest(&site.manifest(3)).unwrap();
}

#[test]
fn fleet_init_makes_the_signing_key_and_prints_the_line_machines_trust() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("fleet");
    let o = tiffin(&["fleet", "init", repo.to_str().unwrap()], tmp.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let secret = repo.join("keys/fleet-signing.key");
    let mode = fs::metadata(&secret).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "secret key mode {mode:o}");
    let public_line = fs::read_to_string(repo.join("keys/fleet-signing.pub")).unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains(public_line.trim()), "{out}");
    assert!(
        out.contains("trusted_key = \"/etc/tiffin/fleet-signing.pub\""),
        "{out}"
    );
    // The hosts' shared module finds the same public key.
    assert_eq!(
        fs::read_to_string(repo.join("common/fleet-signing.pub")).unwrap(),
        public_line
    );
    assert!(fs::read_to_string(repo.join("common/tiffin.nix"))
        .unwrap()
        .contains("trustedKey"));
    assert_eq!(
        SecretKey::load(&secret).unwrap().public(),
        PublicKey::load(&repo.join("keys/fleet-signing.pub")).unwrap()
    );
}

#[test]
fn a_named_signing_key_that_is_missing_stops_publish() {
    let site = Site::new("signing_key = \"secrets/missing.key\"");
    let o = tiffin(&["fleet", "publish"], &site.fleet.repo());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("secrets/missing.key"), "{}", text(&o));
    assert_eq!(site.fleet.current(HOST), None, "nothing published");
}

#[test]
fn an_agent_trusting_the_fleet_key_applies_a_signed_generation() {
    let site = Site::new("signing_key = \"keys/admin.key\"");
    let (_, public) = key_pair(&site.fleet.repo().join("keys"), "admin");
    site.change(1);
    let g = site.publish();
    let (outcome, message, _) = site.cycle(public.to_str().unwrap(), CycleRequest::Update);
    assert_eq!(outcome, Outcome::Updated, "{message:?}");
    assert_ne!(site.running(), site.initial_system);
    assert_eq!(site.state_json()["applied_generation"], g);
}

#[test]
fn an_unsigned_generation_is_refused_by_tiffin_agent_once_and_nothing_is_downloaded() {
    let site = Site::new("");
    let (_, public) = key_pair(site.fleet.tmp.path(), "admin");
    let g = site.publish_unsigned();
    let config = site.agent_config(public.to_str().unwrap());
    let out = Command::new(env!("CARGO_BIN_EXE_tiffin"))
        .args(["agent", "--once", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    for needle in [
        &format!("generation {g} refused"),
        "not signed",
        public.to_str().unwrap(),
        "nothing downloaded",
    ] {
        assert!(said.contains(needle), "{needle:?} missing from: {said}");
    }
    assert_eq!(site.running(), site.initial_system);
    assert_eq!(site.downloaded(), 0);
    assert!(!site.state.join("tree").exists());
    let state = site.state_json();
    assert!(state.get("applied_generation").is_none(), "{state}");
    let last = &state["history"][0];
    assert_eq!(last["failed_step"], "fetch");
    assert!(
        last["message"].as_str().unwrap().contains("not signed"),
        "{state}"
    );
}

#[test]
fn a_generation_signed_by_another_key_is_refused() {
    let site = Site::new("signing_key = \"keys/intruder.key\"");
    let (intruder, _) = key_pair(&site.fleet.repo().join("keys"), "intruder");
    let (admin, trusted) = key_pair(site.fleet.tmp.path(), "admin");
    let g = site.publish();
    let r = site.cycle(trusted.to_str().unwrap(), CycleRequest::Update);
    assert_refused(
        &site,
        &r,
        &site.initial_system,
        &[
            &format!("generation {g} refused"),
            &format!("signed by key {}", intruder.public().key_id()),
            &admin.public().key_id(),
            trusted.to_str().unwrap(),
        ],
    );
    assert_eq!(site.downloaded(), 0);
}

#[test]
fn a_tampered_manifest_with_a_recomputed_tree_hash_and_the_old_signature_is_refused() {
    let site = Site::new("signing_key = \"keys/admin.key\"");
    let (_, trusted) = key_pair(&site.fleet.repo().join("keys"), "admin");
    let g = site.publish();
    // The server swaps configuration.nix for its own and makes the manifest consistent with it:
    // only the signature can tell.
    let evil = b"{ ... }: { users.users.root.password = \"owned\"; }\n";
    let tree_file = site
        .publication()
        .join(format!("gens/{g}/tree/configuration.nix"));
    fs::write(&tree_file, evil).unwrap();
    let mut m = site.manifest(g);
    let i = m
        .entries
        .iter()
        .position(|e| e.path == "configuration.nix")
        .unwrap();
    m.entries[i].sha256 = Some(tiffin::hash::sha256_bytes(evil));
    m.entries[i].size = Some(evil.len() as u64);
    m.tree_hash = tree_hash(&m.entries);
    assert!(m.signature.is_some());
    fs::write(site.manifest_path(g), m.to_bytes()).unwrap();

    let r = site.cycle(trusted.to_str().unwrap(), CycleRequest::Update);
    assert_refused(
        &site,
        &r,
        &site.initial_system,
        &[&format!("generation {g} refused"), "does not match"],
    );
    assert_eq!(site.downloaded(), 0);
}

#[test]
fn a_replayed_older_signed_generation_is_refused_and_the_machine_stays_on_the_newer_one() {
    let site = Site::new("signing_key = \"keys/admin.key\"");
    let (_, trusted) = key_pair(&site.fleet.repo().join("keys"), "admin");
    let trusted = trusted.to_str().unwrap();
    for n in 1..=3 {
        site.change(n);
        assert_eq!(site.publish(), u64::from(n));
    }
    let (outcome, message, _) = site.cycle(trusted, CycleRequest::Update);
    assert_eq!(outcome, Outcome::Updated, "{message:?}");
    let on_three = site.running();
    assert_eq!(site.state_json()["applied_generation"], 3);

    // The server goes back to generation 2: genuinely signed, but older.
    site.point_current_at(2);
    let r = site.cycle(trusted, CycleRequest::Update);
    assert_refused(
        &site,
        &r,
        &on_three,
        &[
            "generation 2 refused",
            "older than generation 3",
            "replayed",
        ],
    );
    assert_eq!(site.state_json()["applied_generation"], 3);
    // The refusal holds at every check, not just the first.
    let r = site.cycle(trusted, CycleRequest::Scheduled);
    assert_refused(&site, &r, &on_three, &["generation 2 refused"]);
}

#[test]
fn a_generation_older_than_the_newest_verified_is_refused_even_if_never_applied() {
    let site = Site::new("signing_key = \"keys/admin.key\"");
    let (_, trusted) = key_pair(&site.fleet.repo().join("keys"), "admin");
    let trusted = trusted.to_str().unwrap();
    site.change(1);
    site.publish();
    let (outcome, message, _) = site.cycle(trusted, CycleRequest::Update);
    assert_eq!(outcome, Outcome::Updated, "{message:?}");
    let on_one = site.running();
    site.change(2);
    site.publish();
    site.change(3);
    site.publish();
    // A check fetches and verifies generation 3 but applies nothing (the user has not said yes).
    let (outcome, message, status) = site.cycle(trusted, CycleRequest::Check);
    assert_eq!(outcome, Outcome::UpToDate, "{message:?}");
    assert_eq!(
        status.last_check.unwrap().result,
        CheckResult::UpdateAvailable
    );
    assert_eq!(site.state_json()["applied_generation"], 1);

    // Generation 2 is newer than what runs, but older than what the server already showed.
    site.point_current_at(2);
    let r = site.cycle(trusted, CycleRequest::Update);
    assert_refused(
        &site,
        &r,
        &on_one,
        &[
            "generation 2 refused",
            "older than generation 3",
            "verified",
        ],
    );
    assert_eq!(site.state_json()["applied_generation"], 1);
}

#[test]
fn a_file_agent_without_trusted_key_keeps_accepting_unsigned_generations() {
    let site = Site::new("");
    site.change(1);
    let g = site.publish_unsigned();
    assert_eq!(site.manifest(g).signature, None);
    let (outcome, message, _) = site.cycle("", CycleRequest::Update);
    assert_eq!(outcome, Outcome::Updated, "{message:?}");
    assert_eq!(site.state_json()["applied_generation"], g);
}

#[test]
fn an_unreadable_trusted_key_stops_the_check_before_the_server_is_asked() {
    let site = Site::new("signing_key = \"keys/admin.key\"");
    key_pair(&site.fleet.repo().join("keys"), "admin");
    site.publish();
    let missing = site.fleet.tmp.path().join("nowhere.pub");
    let r = site.cycle(missing.to_str().unwrap(), CycleRequest::Update);
    assert_refused(
        &site,
        &r,
        &site.initial_system,
        &["trusted_key", "nowhere.pub"],
    );
    assert_eq!(site.downloaded(), 0);
}

/// Signs the live manifest of generation `g` again with the fleet's key, as if `ago` ago: what a
/// server that froze the fleet keeps serving.
fn sign_as_of(site: &Site, g: u64, ago: std::time::Duration) {
    let key = SecretKey::load(&site.fleet.repo().join("keys/fleet-signing.key")).unwrap();
    let mut m = site.manifest(g);
    key.sign_manifest_at(&mut m, std::time::SystemTime::now() - ago);
    fs::write(site.manifest_path(g), m.to_bytes()).unwrap();
}

#[test]
fn a_frozen_publication_older_than_max_age_is_refused_and_status_says_too_old() {
    let site = Site::new("");
    let trusted = site.fleet.public_key_path();
    let trusted = trusted.to_str().unwrap();
    let max_age = "max_age = \"30d\"";
    let days = |n: u64| std::time::Duration::from_secs(n * 86400);
    site.change(1);
    let g = site.publish();
    // The server froze the fleet on a publication signed 40 days ago.
    sign_as_of(&site, g, days(40));
    let r = site.cycle_with(trusted, max_age, CycleRequest::Update);
    assert_refused(
        &site,
        &r,
        &site.initial_system,
        &[
            &format!("generation {g}"),
            "publication too old",
            "max_age is 30days",
        ],
    );
    assert_eq!(site.downloaded(), 0);
    let status = &r.2;
    assert_eq!(status.publication, Some(PublicationNote::TooOld));
    let summary = tiffin::cli::client::summary(status, tiffin::status::unix_now());
    assert!(summary.contains("publication too old"), "{summary}");
    let tray = tiffin::tray::view::view(
        Some(status),
        &tiffin::tray::view::ViewContext {
            now: tiffin::status::unix_now(),
            tz: jiff::tz::TimeZone::UTC,
            user_may_rollback: false,
            start_at_login: false,
            down_reason: Default::default(),
        },
    );
    assert!(
        tray.tooltip.contains("Publication too old"),
        "{}",
        tray.tooltip
    );

    // The admin's next `fleet publish` (nothing changed) signs the same generation anew.
    assert_eq!(site.publish(), g);
    let (outcome, message, status) = site.cycle_with(trusted, max_age, CycleRequest::Update);
    assert_eq!(outcome, Outcome::Updated, "{message:?}");
    assert_eq!(status.publication, None);
    let running = site.running();

    // Applied, then frozen: the unchanged generation's server copy ages past max_age, and the
    // next check says so (the local copy alone would never tell).
    sign_as_of(&site, g, days(31));
    let (outcome, message, status) = site.cycle_with(trusted, max_age, CycleRequest::Check);
    assert_eq!(outcome, Outcome::Failed, "{message:?}");
    assert!(
        message
            .as_deref()
            .unwrap_or("")
            .contains("publication too old"),
        "{message:?}"
    );
    assert_eq!(status.publication, Some(PublicationNote::TooOld));
    assert_eq!(site.running(), running);
    // Younger than max_age: fine.
    sign_as_of(&site, g, days(29));
    let (outcome, message, _) = site.cycle_with(trusted, max_age, CycleRequest::Check);
    assert_eq!(outcome, Outcome::UpToDate, "{message:?}");
}
