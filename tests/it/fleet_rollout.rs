//! Staged rollouts end to end: three hosts in waves 0, 1, 1, each a real agent (`tiffin agent
//! --once`) on the NixOS stand-in built by real Nix (the fake NixOS outside CI when Nix is
//! missing) fetching through the real chrooted sshd; the admin runs the real `tiffin fleet
//! publish --staged`, `fleet rollout`, `fleet status` and `fleet watch`.
//!
//! Needs root and `/usr/sbin/sshd` (fails under `CI=true` without them, skips otherwise).

use crate::pipeline_support;
use crate::support;

use pipeline_support::{
    default_is_real, install_fake_nixos, install_real_nixos, knob_file, knob_flake_nix,
    system_section, FIRST_CONFIGURATION,
};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::sshd::Sshd;

const CANARY: &str = "canary";
const WEB: [&str; 2] = ["web1", "web2"];
const ALL: [&str; 3] = ["canary", "web1", "web2"];

/// The server, the fleet repository with waves, and one machine per host.
struct Fleet {
    real: bool,
    srv: Sshd,
    dir: tempfile::TempDir,
}

impl Fleet {
    fn new() -> Option<Self> {
        let srv = Sshd::start(&ALL)?;
        let dir = tempfile::Builder::new()
            .prefix("tiffin-rollout-")
            .tempdir()
            .unwrap();
        let real = default_is_real();
        let toml_path = srv.fleet().dir.join("fleet.toml");
        let mut toml = fs::read_to_string(&toml_path).unwrap();
        // The canary in wave 0; web1 says wave 1, web2 is in the last wave by default.
        toml = toml.replace("[hosts.canary]\n", "[hosts.canary]\nwave = 0\n");
        toml = toml.replace("[hosts.web1]\n", "[hosts.web1]\nwave = 1\n");
        fs::write(&toml_path, toml).unwrap();
        let f = Fleet { real, srv, dir };
        for h in ALL {
            f.install(h);
        }
        Some(f)
    }

    fn root(&self, h: &str) -> PathBuf {
        self.dir.path().join(h).join("nixos")
    }

    fn repo(&self, h: &str) -> PathBuf {
        self.srv.fleet().host_dir(h)
    }

    fn install(&self, h: &str) {
        let base = self.dir.path().join(h);
        let (root, files_root) = (self.root(h), base.join("fsroot"));
        for d in [&root, &files_root] {
            fs::create_dir_all(d).unwrap();
        }
        let repo = self.repo(h);
        let none = base.join("no-file-publication");
        if self.real {
            fs::write(repo.join("flake.nix"), knob_flake_nix(h)).unwrap();
            fs::write(repo.join("configuration.nix"), FIRST_CONFIGURATION).unwrap();
            install_real_nixos(&root, &none, &repo);
        } else {
            fs::write(repo.join("flake.nix"), "{ outputs = { self }: { }; }\n").unwrap();
            fs::write(repo.join("configuration.nix"), "{ ... }: { }\n").unwrap();
            install_fake_nixos(&root, &none, &repo, h);
        }
        let acc = self.srv.host(h);
        let text = format!(
            "host = \"{h}\"\nsource = \"sftp://{user}@127.0.0.1:{port}/\"\nidentity = \"{id}\"\nknown_hosts = \"{kh}\"\nstate_dir = \"{state}\"\nsocket = \"{state}/agent.sock\"\nhttp_trigger = \"\"\nverify_timeout = \"3s\"\ntrusted_key = {key:?}\n\n{system}",
            user = acc.user,
            port = self.srv.port(),
            id = acc.identity.display(),
            kh = self.srv.known_hosts_for(self.srv.port()).display(),
            state = base.join("state").display(),
            key = self.srv.fleet().public_key().display().to_string(),
            system = system_section(&root, &files_root),
        );
        fs::write(base.join("agent.toml"), text).unwrap();
    }

    /// `tiffin agent --once` on host `h`: its exit code and output.
    fn agent_once(&self, h: &str) -> (i32, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_tiffin"))
            .args(["agent", "--once", "--config"])
            .arg(self.dir.path().join(h).join("agent.toml"))
            .env("RUST_LOG", "warn")
            .env("TIFFIN_STANDIN_ROOT", self.root(h))
            .output()
            .unwrap();
        (out.status.code().unwrap_or(-1), text(&out))
    }

    fn fleet_cmd(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_tiffin"))
            .args(["fleet", "--fleet"])
            .arg(&self.srv.fleet().dir)
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        (out.status.code().unwrap_or(-1), text(&out))
    }

    /// The generation `current` names for `h`, and its manifest's release.
    fn published(&self, h: &str) -> (u64, Option<String>) {
        let m = self.srv.fleet().current_manifest(h);
        (m.generation, m.release)
    }

    /// Every host up to date on generation 1 (a plain publish, one cycle each).
    fn start_on_generation_1(&self) {
        let (code, out) = self.fleet_cmd(&["publish"]);
        assert_eq!(code, 0, "{out}");
        for h in ALL {
            let (code, out) = self.agent_once(h);
            assert_eq!(code, 0, "{h}: {out}");
            assert_eq!(self.published(h), (1, None));
        }
    }

    /// A change to every host's configuration: the next release.
    fn change_everyone(&self, tag: &str) {
        for h in ALL {
            fs::write(
                self.repo(h).join("configuration.nix"),
                format!("{{ ... }}: {{ networking.hostName = \"{h}\"; tag = \"{tag}\"; }}\n"),
            )
            .unwrap();
        }
    }

    fn knob(&self, h: &str, name: &str) {
        let (rel, content) = knob_file(self.real, name, "true");
        let p = self.repo(h).join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The row of `fleet status` for host `h`.
fn row<'a>(status: &'a str, h: &str) -> &'a str {
    status
        .lines()
        .find(|l| l.starts_with(&format!("{h} ")))
        .unwrap_or_else(|| panic!("no row for {h}: {status}"))
}

fn release_of(out: &str) -> String {
    out.split_whitespace()
        .find(|w| w.starts_with("r-"))
        .unwrap_or_else(|| panic!("no release id in: {out}"))
        .trim_end_matches(':')
        .to_string()
}

#[test]
fn a_staged_release_reaches_the_canary_first_then_wave_one_after_the_canary_reports() {
    let Some(f) = Fleet::new() else { return };
    f.start_on_generation_1();
    f.change_everyone("release-2");

    let (code, out) = f.fleet_cmd(&["publish", "--staged"]);
    assert_eq!(code, 0, "{out}");
    let id = release_of(&out);
    assert_eq!(f.published(CANARY), (2, Some(id.clone())), "{out}");
    for h in WEB {
        assert_eq!(
            f.published(h),
            (1, None),
            "{h} changed before its wave: {out}"
        );
    }
    // The canary has not reported yet: nothing moves.
    let (code, out) = f.fleet_cmd(&["rollout", "--soak", "0s"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("waiting for canary"), "{out}");
    for h in WEB {
        assert_eq!(f.published(h).0, 1, "{out}");
    }
    let (code, out) = f.fleet_cmd(&["status"]);
    assert_eq!(code, 0, "{out}");
    let first = out.lines().next().unwrap();
    assert!(
        first.starts_with(&format!("rollout {id}: wave 0 of 0,1")) && first.contains("not halted"),
        "{out}"
    );

    let (code, out) = f.agent_once(CANARY);
    assert_eq!(code, 0, "{out}");
    let (code, out) = f.fleet_cmd(&["rollout", "--soak", "0s"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("release {id}: published to wave 1")),
        "{out}"
    );
    for h in WEB {
        assert_eq!(f.published(h), (2, Some(id.clone())), "{out}");
        let (code, out) = f.agent_once(h);
        assert_eq!(code, 0, "{h}: {out}");
    }
    let (code, out) = f.fleet_cmd(&["rollout", "--soak", "0s"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("every wave has it"), "{out}");
    let (_, out) = f.fleet_cmd(&["status"]);
    assert!(
        out.lines().next().unwrap().contains("wave 1 of 0,1") && out.contains("complete"),
        "{out}"
    );
    for h in ALL {
        assert!(row(&out, h).contains("up to date"), "{out}");
    }

    // Someone switches web2 to another system by hand (here: the one it ran before tiffin's
    // first cycle); its agent's next contact says so, and `fleet status` calls it drifted.
    let link = f.root("web2").join("run/current-system");
    let before = fs::canonicalize(&link).unwrap();
    let initial = fs::canonicalize(f.root("web2").join("profiles/system-1-link")).unwrap();
    assert_ne!(before, initial);
    fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&initial, &link).unwrap();
    let (code, out) = f.agent_once("web2");
    assert_eq!(code, 0, "{out}");
    let (_, out) = f.fleet_cmd(&["status"]);
    let web2 = row(&out, "web2");
    // Its agent (policy auto) applied g2 again and said in its report what it had found.
    let name = initial.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        web2.contains("drifted")
            && web2.contains("was switched by hand to")
            && web2.contains(&name[..20]),
        "{out}"
    );
    assert_eq!(
        fs::canonicalize(&link).unwrap(),
        before,
        "tiffin put its system back"
    );
    assert!(row(&out, "web1").contains("up to date"), "{out}");
    // The rollout's state is the server's, in no host's chroot, root's alone.
    let state = f
        .srv
        .fleet()
        .config
        .chroot
        .join(tiffin::fleet::rollout::STATE_FILE);
    let meta = fs::metadata(&state).unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!((meta.uid(), meta.permissions().mode() & 0o777), (0, 0o600));
}

struct Watcher(Child);
impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_file_with(p: &Path, needle: &str, secs: u64) -> String {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        let t = fs::read_to_string(p).unwrap_or_default();
        if t.contains(needle) {
            return t;
        }
        assert!(
            Instant::now() < end,
            "{needle:?} not in {}: {t}",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_release_that_cuts_the_canary_off_halts_is_quarantined_and_alerted_and_wave_one_keeps_its_publication(
) {
    let Some(f) = Fleet::new() else { return };
    f.start_on_generation_1();
    // The release's canary system makes the server refuse the canary once activated.
    fs::write(
        f.root(CANARY).join("cut-sshd-hook"),
        format!("{}\n", f.srv.write_cut_script(CANARY).display()),
    )
    .unwrap();
    f.knob(CANARY, "cutSshd");
    f.change_everyone("release-bad");
    let alerts = f.dir.path().join("alerts.jsonl");
    let _w = Watcher(
        Command::new(env!("CARGO_BIN_EXE_tiffin"))
            .args(["fleet", "--fleet"])
            .arg(&f.srv.fleet().dir)
            .args(["watch", "--soak", "0s", "--alert-command"])
            .arg(format!("cat >> '{}'", alerts.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (code, out) = f.fleet_cmd(&["publish", "--staged"]);
    assert_eq!(code, 0, "{out}");
    let id = release_of(&out);
    assert_eq!(f.published(CANARY), (2, Some(id.clone())));

    let (code, out) = f.agent_once(CANARY);
    assert_eq!(code, 3, "the canary rolls back: {out}");
    let (code, out) = f.fleet_cmd(&["rollout", "--soak", "0s"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "release {id}: HALTED: host canary rolled back at verify (g2)"
        )),
        "{out}"
    );
    for h in WEB {
        assert_eq!(f.published(h), (1, None), "{h} got a halted release");
    }
    let (_, status) = f.fleet_cmd(&["status"]);
    assert!(row(&status, CANARY).contains("rolled back"), "{status}");
    let (_, json) = f.fleet_cmd(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["rollout"]["release"]["halted"]["host"], CANARY, "{json}");
    assert_eq!(
        v["rollout"]["quarantined"][0]["release"],
        id.as_str(),
        "{json}"
    );
    let first = status.lines().next().unwrap();
    assert!(
        first.contains(&format!("rollout {id}: wave 0"))
            && first.contains("HALTED: canary rolled back at verify"),
        "{status}"
    );
    // The watcher saw the rollback and the halt, and told the alert command.
    let t = wait_for_file_with(&alerts, "\"halted\"", 20);
    let events: Vec<serde_json::Value> = t
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let halted = events.iter().find(|e| e["event"] == "halted").unwrap();
    assert_eq!(
        (
            halted["host"].as_str(),
            halted["release"].as_str(),
            halted["step"].as_str()
        ),
        (Some(CANARY), Some(id.as_str()), Some("verify")),
        "{t}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "rolled_back" && e["host"] == CANARY),
        "{t}"
    );

    // The same content again: refused until --clear.
    let (code, out) = f.fleet_cmd(&["publish", "--staged"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(&format!(
            "release {id} is quarantined: host canary rolled back at verify"
        )),
        "{out}"
    );
    let (code, out) = f.fleet_cmd(&["rollout", "--clear"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&id), "{out}");
    let (code, out) = f.fleet_cmd(&["publish", "--staged"]);
    assert_eq!(code, 0, "{out}");
    for h in WEB {
        assert_eq!(f.published(h), (1, None), "{out}");
    }
}

/// The judge on synthetic records: a host not seen within the grace period is listed and does not
/// hold the wave back unless `wait_for_unseen`; a failure of the release's generation halts.
#[test]
fn unseen_hosts_are_listed_and_wait_only_when_asked_and_a_failure_halts() {
    use crate::fleet_status_support::{Fleet as Synthetic, ReportSpec, SeenSpec};
    use tiffin::config::rollout::RolloutConfig;
    use tiffin::fleet::rollout::{judge, Release, Verdict};
    use tiffin::status::{unix_now, Outcome};
    let now = unix_now();
    let f = Synthetic::new(&["done", "gone", "late"]);
    for h in ["done", "gone", "late"] {
        f.publish(h, 2, now - 600, None);
    }
    f.seen("done", SeenSpec::running(2, now - 60));
    f.seen("late", SeenSpec::running(1, now - 60));
    f.seen("gone", SeenSpec::running(1, now - 3 * 3600));
    let release = |hosts: &[&str]| Release {
        id: "r-test".into(),
        staged_at: now - 600,
        wave: 0,
        wave_since: now - 600,
        waves: vec![0, 1],
        generations: hosts.iter().map(|h| (h.to_string(), 2)).collect(),
        complete: false,
        halted: None,
    };
    let cfg = RolloutConfig::default();
    assert_eq!(
        judge(&f.chroot, &release(&["done", "gone"]), &cfg, now),
        Verdict::Done {
            unseen: vec!["gone".into()]
        }
    );
    let strict = RolloutConfig {
        wait_for_unseen: true,
        ..RolloutConfig::default()
    };
    assert!(matches!(
        judge(&f.chroot, &release(&["done", "gone"]), &strict, now),
        Verdict::Waiting { hosts, .. } if hosts.len() == 1 && hosts[0].0 == "gone"
    ));
    assert!(matches!(
        judge(&f.chroot, &release(&["done", "late"]), &cfg, now),
        Verdict::Waiting { hosts, unseen } if hosts[0].0 == "late" && unseen.is_empty()
    ));
    f.report("late", ReportSpec::new(2, Outcome::Failed, now - 30));
    match judge(&f.chroot, &release(&["done", "late"]), &cfg, now) {
        Verdict::Halt(h) => {
            assert_eq!((h.host.as_str(), h.generation), ("late", 2));
            assert_eq!(
                (h.outcome.as_str(), h.step.as_deref()),
                ("failed", Some("build"))
            );
        }
        v => panic!("{v:?}"),
    }
}
