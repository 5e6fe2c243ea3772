//! The agent's rebuild pipeline through the real sshd on real Nix: `tiffin agent --once`
//! fetches from an `sftp://` source (pinned host key, the host's own user and key, its chroot
//! made by `tiffin fleet publish`), builds the NixOS stand-in with real Nix into a real profile
//! and activates it (assets/nixos-standin; without Nix, outside CI, on the fake NixOS),
//! verifies by logging in to the server again, and uploads its report into the chroot's `logs/`
//! through SFTP. An activation that cuts the machine off does so at the server: the stand-in's
//! `switch-to-configuration` runs a script that makes the test sshd refuse the host. The kill
//! tests stop the agent where the server or a health check holds it, not inside a Nix step.
//!
//! Needs root and `/usr/sbin/sshd` (fails under `CI=true` without them, skips otherwise).

use crate::pipeline_support;
use crate::support;

use pipeline_support::{
    default_is_real, install_fake_nixos, install_real_nixos, knob_file, knob_flake_nix,
    system_section, wait_for, FIRST_CONFIGURATION,
};
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use support::sshd::Sshd;

pub(crate) const HOST: &str = "laptop";

/// A NixOS machine (the stand-in on real Nix) whose agent reaches a real sshd (also used by
/// `sealed_files`).
pub(crate) struct SshMachine {
    /// On real Nix (else the fake NixOS).
    real: bool,
    pub(crate) srv: Sshd,
    _dir: tempfile::TempDir,
    /// The machine's root: the stand-in's sandbox root ($TIFFIN_STANDIN_ROOT), or the fake's.
    root: PathBuf,
    pub(crate) state: PathBuf,
    pub(crate) files_root: PathBuf,
    pub(crate) config_path: PathBuf,
    /// The system the machine ran before tiffin's first cycle.
    initial_system: PathBuf,
}

impl SshMachine {
    /// `None` (skipped) when this machine cannot run sshd, outside CI.
    pub(crate) fn new() -> Option<Self> {
        let srv = Sshd::start(&[HOST])?;
        let dir = tempfile::Builder::new()
            .prefix("tiffin-pipeline-sshd-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path().join("nixos");
        let files_root = dir.path().join("fsroot");
        for d in [&root, &files_root] {
            fs::create_dir_all(d).unwrap();
        }
        let repo = srv.fleet().host_dir(HOST);
        // No file:// publication here: cutNetwork has nothing to move.
        let no_publication = dir.path().join("no-file-publication");
        let real = default_is_real();
        let initial_system = if real {
            fs::write(repo.join("flake.nix"), knob_flake_nix(HOST)).unwrap();
            fs::write(repo.join("configuration.nix"), FIRST_CONFIGURATION).unwrap();
            install_real_nixos(&root, &no_publication, &repo)
        } else {
            fs::write(repo.join("flake.nix"), "{ outputs = { self }: { }; }\n").unwrap();
            fs::write(repo.join("configuration.nix"), "{ ... }: { }\n").unwrap();
            install_fake_nixos(&root, &no_publication, &repo, HOST)
        };
        let m = Self {
            real,
            state: dir.path().join("state"),
            config_path: dir.path().join("agent.toml"),
            srv,
            _dir: dir,
            root,
            files_root,
            initial_system,
        };
        m.write_config("");
        Some(m)
    }

    /// agent.toml trusting the fleet's key (signed by default), with `extra` lines.
    fn write_config(&self, extra: &str) {
        let trusted = format!(
            "trusted_key = {:?}",
            self.srv.fleet().public_key().display().to_string()
        );
        self.write_config_raw(&format!("{trusted}\n{extra}"));
    }

    /// agent.toml with exactly `extra` beyond the basics (no `trusted_key` unless given).
    pub(crate) fn write_config_raw(&self, extra: &str) {
        let h = self.srv.host(HOST);
        // Short by default so that failing verifications end quickly; `extra` may set its own.
        let verify = if extra.contains("verify_timeout") {
            ""
        } else {
            "verify_timeout = \"3s\""
        };
        let text = format!(
            r#"host = "{HOST}"
source = "sftp://{user}@127.0.0.1:{port}/"
identity = "{identity}"
known_hosts = "{known_hosts}"
state_dir = "{state}"
socket = "{state}/agent.sock"
http_trigger = ""
{verify}
{extra}

{system}"#,
            user = h.user,
            port = self.srv.port(),
            identity = h.identity.display(),
            known_hosts = self.srv.known_hosts_for(self.srv.port()).display(),
            state = self.state.display(),
            system = system_section(&self.root, &self.files_root),
        );
        fs::write(&self.config_path, text).unwrap();
    }

    /// Points the agent at another server holding the same publication (a mirror): its port
    /// and pinned host key replace the test sshd's in agent.toml.
    pub(crate) fn use_server(&self, port: u16, known_hosts: &Path) {
        let text = fs::read_to_string(&self.config_path).unwrap();
        let text: Vec<String> = text
            .lines()
            .map(|l| {
                if let Some(rest) = l.strip_prefix("source = \"sftp://") {
                    let user = rest.split('@').next().unwrap_or_default();
                    format!("source = \"sftp://{user}@127.0.0.1:{port}/\"")
                } else if l.starts_with("known_hosts = ") {
                    format!("known_hosts = {:?}", known_hosts.display().to_string())
                } else {
                    l.to_string()
                }
            })
            .collect();
        fs::write(&self.config_path, text.join("\n") + "\n").unwrap();
    }

    /// Turns on the stand-in's knob `standin.<name>` (on the fake: its file).
    fn knob(&self, name: &str) {
        let (rel, content) = knob_file(self.real, name, "true");
        self.write(&rel, content.as_bytes());
    }

    fn unknob(&self, name: &str) {
        self.remove(&knob_file(self.real, name, "true").0);
    }

    /// Makes cutSshd systems cut this host off the test sshd when activated.
    fn arm_cut_script(&self) {
        let script = self.srv.write_cut_script(HOST);
        fs::write(
            self.root.join("cut-sshd-hook"),
            format!("{}\n", script.display()),
        )
        .unwrap();
    }

    /// Writes a file of the host's tree in the fleet repository.
    pub(crate) fn write(&self, rel: &str, content: &[u8]) {
        let p = self.srv.fleet().host_dir(HOST).join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    fn remove(&self, rel: &str) {
        fs::remove_file(self.srv.fleet().host_dir(HOST).join(rel)).unwrap();
    }

    /// `tiffin fleet publish laptop`: the new generation.
    pub(crate) fn publish(&self) -> u64 {
        self.srv.publish_repo(HOST)
    }

    /// `tiffin fleet publish --unsigned laptop`: the new generation.
    fn publish_unsigned(&self) -> u64 {
        let fleet = self.srv.fleet();
        let opts = tiffin::fleet::PublishOptions {
            unsigned: true,
            ..Default::default()
        };
        let r = tiffin::fleet::publish_host(&fleet.dir, &fleet.config, HOST, &opts)
            .expect("publish --unsigned");
        r.generation().unwrap_or_else(|| panic!("{:?}", r.result))
    }

    fn once_command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tiffin"));
        c.args(["agent", "--once", "--config"])
            .arg(&self.config_path)
            .env("RUST_LOG", "warn")
            // The sandbox root the stand-in's switch-to-configuration acts on.
            .env("TIFFIN_STANDIN_ROOT", &self.root);
        c
    }

    /// Runs `tiffin agent --once`; the exit code and what it printed.
    pub(crate) fn run_once(&self) -> (i32, String) {
        let out = self.once_command().output().expect("running tiffin");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    fn spawn_once(&self) -> Child {
        self.once_command()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting tiffin")
    }

    fn current(&self) -> PathBuf {
        fs::canonicalize(self.root.join("run/current-system")).unwrap()
    }
    fn profile(&self) -> PathBuf {
        fs::canonicalize(self.root.join("profiles/system")).unwrap()
    }
    fn boot_default(&self) -> PathBuf {
        fs::canonicalize(self.root.join("boot-default")).unwrap()
    }

    /// Every system the profile ever pointed at.
    fn profile_history(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(self.root.join("profiles"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with("-link"))
            .map(|e| fs::canonicalize(e.path()).unwrap())
            .collect();
        v.sort();
        v
    }

    /// Running, profile and boot default agree: the machine is on one system, not between two.
    fn on_one_system(&self) -> PathBuf {
        let cur = self.current();
        assert_eq!(self.profile(), cur, "profile and running system differ");
        assert_eq!(
            self.boot_default(),
            cur,
            "boot default and running system differ"
        );
        cur
    }

    fn calls(&self) -> String {
        fs::read_to_string(self.root.join("calls.log")).unwrap_or_default()
    }

    fn count_calls(&self, prefix: &str) -> usize {
        self.calls()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .count()
    }

    pub(crate) fn state_json(&self) -> serde_json::Value {
        let b = fs::read(self.state.join("state.json")).expect("state.json");
        serde_json::from_slice(&b).expect("state.json is JSON")
    }

    fn journal_step(&self) -> Option<String> {
        self.state_json()["journal"]["step"]
            .as_str()
            .map(str::to_string)
    }

    /// `(outcome, failed_step)` of every attempt in the state's history.
    pub(crate) fn history(&self) -> Vec<(String, String)> {
        self.state_json()["history"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|a| {
                (
                    a["outcome"].as_str().unwrap_or("").to_string(),
                    a["failed_step"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// The host's `logs/` in its chroot on the server.
    fn server_logs(&self) -> PathBuf {
        self.srv.host(HOST).dir.join("logs")
    }

    /// Names of the reports on the server (not seen.json), sorted.
    pub(crate) fn reports(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.server_logs())
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".json") && n != "seen.json")
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Reports still queued on the machine.
    pub(crate) fn queued(&self) -> Vec<String> {
        fs::read_dir(self.state.join("outbox"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Panics unless `p` was written by the host's own user, i.e. through its SFTP session (the
    /// agent runs as root: a file it wrote any other way would be root's).
    fn assert_uploaded_through_sftp(&self, p: &Path) {
        let uid = nix::unistd::User::from_name(&self.srv.host(HOST).user)
            .unwrap()
            .expect("the host's user")
            .uid
            .as_raw();
        let meta = fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(meta.uid(), uid, "{} is not the host user's", p.display());
    }

    /// The one report for generation `g` with `outcome` on the server, and its unzipped log;
    /// both uploaded through SFTP.
    pub(crate) fn report(&self, g: u64, outcome: &str) -> (serde_json::Value, String) {
        let suffix = format!("-g{g}-{outcome}.json");
        let names: Vec<String> = self
            .reports()
            .into_iter()
            .filter(|n| n.ends_with(&suffix))
            .collect();
        assert_eq!(
            names.len(),
            1,
            "expected one *{suffix} report on the server, there: {:?}, queued: {:?}",
            self.reports(),
            self.queued()
        );
        let logs = self.server_logs();
        let json_path = logs.join(&names[0]);
        self.assert_uploaded_through_sftp(&json_path);
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(&json_path).unwrap()).expect("the report is JSON");
        let log_name = json["log"]
            .as_str()
            .expect("report names its log")
            .to_string();
        assert_eq!(log_name, names[0].replace(".json", ".log.gz"));
        self.assert_uploaded_through_sftp(&logs.join(&log_name));
        let mut text = String::new();
        flate2::read::GzDecoder::new(fs::File::open(logs.join(&log_name)).unwrap())
            .read_to_string(&mut text)
            .expect("the log is gzip'd text");
        (json, text)
    }

    fn seen(&self) -> serde_json::Value {
        let p = self.server_logs().join("seen.json");
        self.assert_uploaded_through_sftp(&p);
        serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
    }
}

fn kill(child: &mut Child) {
    child.kill().expect("SIGKILL the agent");
    child.wait().expect("reap the agent");
}

fn pair(o: &str, s: &str) -> (String, String) {
    (o.to_string(), s.to_string())
}

#[test]
fn happy_path_over_sftp_puts_the_new_system_in_place_and_uploads_the_report_into_the_chroot() {
    let Some(m) = SshMachine::new() else { return };
    m.write(
        "configuration.nix",
        b"{ ... }: { services.openssh.enable = true; }\n",
    );
    let g = m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}\n{}", m.srv.log_text());
    let new = m.on_one_system();
    assert_ne!(new, m.initial_system, "the new system must be running");
    // What was built is what `fleet publish` put in the chroot.
    let published = m.srv.fleet().current_manifest(HOST);
    assert_eq!(published.generation, g);
    assert_eq!(
        fs::read(m.state.join("tree/configuration.nix")).unwrap(),
        b"{ ... }: { services.openssh.enable = true; }\n"
    );

    let (report, log) = m.report(g, "updated");
    assert_eq!(report["host"], HOST);
    assert_eq!(report["outcome"], "updated");
    assert_eq!(report["system_before"], m.initial_system.to_str().unwrap());
    assert_eq!(report["system_after"], new.to_str().unwrap());
    assert!(log.contains("switch-to-configuration test"), "{log}");
    assert!(log.contains("verify: the server is reachable"), "{log}");
    let seen = m.seen();
    assert_eq!(seen["applied_generation"], g);
    assert_eq!(seen["running_system"], new.to_str().unwrap());
    assert!(m.queued().is_empty(), "{:?}", m.queued());
    // The agent logged in as the host's user with its key (the fetch, then the verification).
    let accepted = format!("Accepted publickey for {}", m.srv.host(HOST).user);
    assert!(
        m.srv.log_text().matches(&accepted).count() >= 2,
        "{}",
        m.srv.log_text()
    );

    // The next cycle finds nothing new: no build, no new report.
    let builds = m.count_calls("nix build");
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("up_to_date"), "{out}");
    assert_eq!(m.count_calls("nix build"), builds);
    assert_eq!(m.reports().len(), 1, "{:?}", m.reports());
}

#[test]
fn build_failure_over_sftp_activates_nothing_and_uploads_a_failed_at_build_report_with_its_log() {
    let Some(m) = SshMachine::new() else { return };
    m.knob("failBuild");
    let g = m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 1, "{out}");
    assert_eq!(m.on_one_system(), m.initial_system);
    assert_eq!(m.profile_history(), vec![m.initial_system.clone()]);
    assert!(
        !m.calls().contains("switch-to-configuration"),
        "{}",
        m.calls()
    );
    let (report, log) = m.report(g, "failed");
    assert_eq!(report["failed_step"], "build");
    assert!(
        log.contains("standin.failBuild") || log.contains("FAIL_BUILD"),
        "the log carries the build's output: {log}"
    );
    assert!(
        report["message"]
            .as_str()
            .unwrap()
            .contains("exited with 1"),
        "{report}"
    );
    assert!(m.queued().is_empty(), "{:?}", m.queued());
}

#[test]
fn an_activation_that_makes_sshd_refuse_the_host_is_rolled_back_reported_and_not_retried() {
    let Some(m) = SshMachine::new() else { return };
    m.arm_cut_script();
    m.knob("cutSshd");
    let bad = m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 3, "{out}");
    // The server really refused the host after the activation, and took it back after the
    // previous system was activated again.
    assert_eq!(m.srv.cut_script_calls(HOST), ["cut", "restore"]);
    assert!(m.srv.authorized_keys(HOST).exists());
    // The session the agent kept open since its check was dropped too, like a real cut.
    assert!(!m.srv.cut_script_killed(HOST).is_empty());
    assert_eq!(
        m.current(),
        m.initial_system,
        "the previous system is active again"
    );
    // The profile never pointed at the failed system, so it never became the boot default.
    assert_eq!(m.profile_history(), vec![m.initial_system.clone()]);
    assert_eq!(m.on_one_system(), m.initial_system);

    // The report, uploaded once the host could log in again.
    let (report, log) = m.report(bad, "rolled_back");
    assert_eq!(report["failed_step"], "verify");
    let msg = report["message"].as_str().unwrap();
    assert!(
        msg.contains("verify failed") && msg.contains("cannot reach the server"),
        "{msg}"
    );
    // The reason is what the real sshd answered: the host's key is no longer accepted.
    assert!(msg.contains("refused the key"), "{msg}");
    assert!(log.contains("rolling back"), "{log}");
    assert!(m.queued().is_empty(), "{:?}", m.queued());
    let state = m.state_json();
    assert_eq!(state["last_rollback"]["generation"], bad);
    assert!(
        state["do_not_retry"][bad.to_string()].is_object(),
        "{state}"
    );

    // The next cycle does not retry it.
    let builds = m.count_calls("nix build");
    let (code, out) = m.run_once();
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("not retried"), "{out}");
    assert_eq!(m.count_calls("nix build"), builds);
    assert_eq!(m.srv.cut_script_calls(HOST), ["cut", "restore"]);
    assert_eq!(m.current(), m.initial_system);

    // A newer generation is applied normally.
    m.unknob("cutSshd");
    m.write("configuration.nix", b"{ ... }: { fixed = true; }\n");
    let good = m.publish();
    assert!(good > bad);
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    let new = m.on_one_system();
    assert_ne!(new, m.initial_system);
    m.report(good, "updated");
    assert!(m.state_json()["do_not_retry"]
        .get(bad.to_string())
        .is_none());
    assert_eq!(m.seen()["applied_generation"], good);
}

#[test]
fn killed_during_the_sftp_download_of_a_large_file_stays_on_the_old_system_then_applies() {
    let Some(m) = SshMachine::new() else { return };
    // Incompressible, so that compression on the wire does not make it short.
    let size = 16 << 20;
    let mut big = vec![0u8; size];
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for chunk in big.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    m.write("blob.bin", &big);
    m.write("configuration.nix", b"{ ... }: { big = true; }\n");
    let g = m.publish();

    let mut agent = m.spawn_once();
    let store = m.state.join("store");
    // The blob is arriving: its partial object in the store has bytes. Polled tightly: the
    // whole download takes a few hundred milliseconds.
    let started = std::time::Instant::now();
    let partial = loop {
        let found = fs::read_dir(&store).ok().and_then(|rd| {
            rd.flatten().find_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let len = e.metadata().ok()?.len();
                (name.starts_with(".incoming-") && len > 0).then(|| e.path())
            })
        });
        if let Some(p) = found {
            break p;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the download of the large file never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    // Freeze the server so that the transfer cannot finish, then kill the agent.
    m.srv.pause();
    kill(&mut agent);
    m.srv.resume();
    let got = fs::metadata(&partial).map(|md| md.len()).unwrap_or(0);
    eprintln!("killed with {got} of {size} bytes downloaded");
    assert!(
        got < size as u64,
        "the agent was killed mid-file ({got} of {size} bytes)"
    );
    assert_eq!(m.journal_step().as_deref(), Some("fetch"));
    assert!(
        !m.state.join("tree").exists(),
        "a partial download is never swapped in"
    );
    assert_eq!(m.on_one_system(), m.initial_system);
    assert_eq!(m.count_calls("nix build"), 0);

    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    assert_ne!(m.on_one_system(), m.initial_system);
    assert_eq!(
        fs::read(m.state.join("tree/blob.bin")).unwrap().len(),
        size,
        "the whole file arrived the second time"
    );
    assert!(!partial.exists(), "the partial download was cleaned up");
    assert_eq!(
        m.history(),
        vec![pair("interrupted", "fetch"), pair("updated", "")]
    );
    m.report(g, "updated");
}

#[test]
fn killed_while_verifying_a_system_that_sshd_refuses_rolls_back_at_restart() {
    let Some(m) = SshMachine::new() else { return };
    m.arm_cut_script();
    // Long enough that the agent is surely killed while it still retries to log in.
    m.write_config("verify_timeout = \"60s\"");
    m.knob("cutSshd");
    let g = m.publish();
    let mut agent = m.spawn_once();
    wait_for("the agent to be verifying", || {
        fs::read(m.state.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .filter(|s| s["journal"]["step"] == "verify")
    });
    kill(&mut agent);
    assert_ne!(m.current(), m.initial_system, "the bad system runs");
    assert_eq!(m.profile(), m.initial_system, "but it was never committed");
    assert_eq!(m.srv.cut_script_calls(HOST), ["cut"]);
    // And the server refuses this host now.
    let probe = m.srv.agent_config(HOST, m.srv.port(), &m.state);
    let e = tiffin::source::open(&probe)
        .err()
        .expect("the host is cut off");
    assert!(e.to_string().contains("refused the key"), "{e}");

    m.write_config("");
    let (code, out) = m.run_once();
    assert_eq!(code, 3, "{out}");
    assert_eq!(m.on_one_system(), m.initial_system);
    assert_eq!(m.profile_history(), vec![m.initial_system.clone()]);
    assert_eq!(m.srv.cut_script_calls(HOST), ["cut", "restore"]);
    let (r, _) = m.report(g, "rolled_back");
    assert_eq!(r["failed_step"], "verify");
    // And it is not tried again.
    let builds = m.count_calls("nix build");
    assert_eq!(m.run_once().0, 3);
    assert_eq!(m.count_calls("nix build"), builds);
    assert_eq!(m.on_one_system(), m.initial_system);
}

#[test]
fn killed_while_verifying_a_good_system_logs_in_again_at_restart_and_commits() {
    let Some(m) = SshMachine::new() else { return };
    // A health check that waits on a marker, so that the agent is killed inside verify.
    m.write_config(&format!(
        r#"health_checks = ["echo $$ > {r}/paused-verify; while [ -e {r}/pause-verify ]; do sleep 0.05; done"]"#,
        r = m.root.display()
    ));
    m.write("configuration.nix", b"{ ... }: { v = 1; }\n");
    let g = m.publish();
    fs::write(m.root.join("pause-verify"), "").unwrap();
    let mut agent = m.spawn_once();
    let check: i32 = wait_for("the health check to wait", || {
        fs::read_to_string(m.root.join("paused-verify"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    });
    kill(&mut agent);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(check),
        nix::sys::signal::Signal::SIGKILL,
    );
    fs::remove_file(m.root.join("pause-verify")).unwrap();
    assert_eq!(m.journal_step().as_deref(), Some("verify"));
    let new = m.current();
    assert_ne!(new, m.initial_system);
    assert_eq!(m.profile(), m.initial_system, "not committed yet");

    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    assert_eq!(m.on_one_system(), new);
    let (_, log) = m.report(g, "updated");
    assert!(log.contains("verify: the server is reachable"), "{log}");
}

#[test]
fn an_unsigned_publication_is_refused_by_an_sftp_agent_without_allow_unsigned() {
    let Some(m) = SshMachine::new() else { return };
    m.write("configuration.nix", b"{ ... }: { x = 1; }\n");
    let g = m.publish_unsigned();
    assert_eq!(m.srv.fleet().current_manifest(HOST).signature, None);

    // No trusted_key, no allow_unsigned: refused before the server is asked for anything.
    m.write_config_raw("");
    let (code, out) = m.run_once();
    assert_eq!(code, 1, "{out}");
    for needle in ["no trusted_key", "allow_unsigned = true", "nothing fetched"] {
        assert!(out.contains(needle), "{needle:?} missing from: {out}");
    }
    assert_eq!(m.current(), m.initial_system);
    assert!(!m.state.join("tree").exists());
    // With the fleet's key trusted, the unsigned manifest is refused before it is parsed.
    m.write_config("");
    let (code, out) = m.run_once();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("generation {g} refused before parsing"))
            && out.contains("not signed"),
        "{out}"
    );
    assert_eq!(m.current(), m.initial_system);

    // `allow_unsigned = true`, knowingly: applied, and the report says "unsigned".
    m.write_config_raw("allow_unsigned = true");
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    assert_ne!(m.on_one_system(), m.initial_system);
    let (report, _) = m.report(g, "updated");
    assert_eq!(report["publication"], "unsigned", "{report}");
}
