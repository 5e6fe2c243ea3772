//! A machine for the pipeline tests: by default the NixOS stand-in (assets/nixos-standin) on
//! real Nix (`real.rs`: real `nix build`/`nix-build`, real store paths, a real `nix-env` profile;
//! only activation is simulated, on a sandbox root), a `file://` publication laid out as docs/publication.md
//! describes, the host's source tree to edit and publish, and the agent's configuration pointing
//! at all of it. [`Machine::fake`] is the same machine on the fake shell scripts of
//! assets/fake-nixos, for the tests that pause or kill a step at an exact point (`pause-<step>`);
//! they say so at their top. Without Nix the default machine falls back to the fake, saying so,
//! except under `CI=true`, where a missing Nix fails the test.
#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tiffin::manifest::{entries_of, walk_tree, EntryKind, Manifest};

mod real;
use crate::real_nix;
#[allow(unused_imports)] // not every user (the benches) needs all of it
pub use real::{
    default_is_real, in_process, install_real_nixos, knob_file, knob_flake_nix, FIRST_CONFIGURATION,
};

pub const HOST: &str = "laptop";

pub fn fake_nixos_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/fake-nixos")
}

/// Installs the fake NixOS under `root` (wrappers in `root/bin`), running and booted into the
/// system built from `tree` for `host`; `publication` is what CUT_NETWORK moves aside.
/// Returns the initial system.
pub fn install_fake_nixos(root: &Path, publication: &Path, tree: &Path, host: &str) -> PathBuf {
    fs::create_dir_all(root).unwrap();
    fs::write(
        root.join("publication"),
        format!("{}\n", publication.display()),
    )
    .unwrap();
    let bin = root.join("bin");
    fs::create_dir_all(&bin).unwrap();
    for cmd in ["nix", "nix-build", "nix-env", "systemd-run"] {
        let w = bin.join(cmd);
        fs::write(
            &w,
            format!(
                "#!/bin/sh\nFAKE_NIXOS_ROOT='{}' exec '{}' \"$@\"\n",
                root.display(),
                fake_nixos_dir().join(cmd).display()
            ),
        )
        .unwrap();
        fs::set_permissions(&w, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = Command::new(fake_nixos_dir().join("init"))
        .arg(tree)
        .arg(host)
        .env("FAKE_NIXOS_ROOT", root)
        .output()
        .expect("running assets/fake-nixos/init");
    assert!(out.status.success(), "fake init: {out:?}");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// The `[system]` table of an agent.toml for the machine under `root`, real Nix's
/// ([`install_real_nixos`]) or the fake's ([`install_fake_nixos`]): both lay out `bin/`,
/// `profiles/` and `run/` alike.
pub fn system_section(root: &Path, files_root: &Path) -> String {
    let bin = root.join("bin");
    format!(
        r#"[system]
nix = "{bin}/nix"
nix_build = "{bin}/nix-build"
nix_env = "{bin}/nix-env"
systemd_run = "{bin}/systemd-run"
profile = "{root}/profiles/system"
current_system = "{root}/run/current-system"
booted_system = "{root}/run/booted-system"
files_root = "{files_root}"
"#,
        bin = bin.display(),
        root = root.display(),
        files_root = files_root.display(),
    )
}

pub struct Machine {
    pub dir: tempfile::TempDir,
    /// The fake NixOS's root ($FAKE_NIXOS_ROOT).
    pub root: PathBuf,
    /// The host's publication (`file://` source).
    pub publication: PathBuf,
    pub state: PathBuf,
    /// Where files/ is installed.
    pub files_root: PathBuf,
    /// The host's source tree in the admin's repository.
    pub repo: PathBuf,
    pub config_path: PathBuf,
    /// The system the machine ran before tiffin's first cycle.
    pub initial_system: PathBuf,
    next_generation: u64,
    /// On real Nix and the stand-in (else on the fake scripts).
    pub real: bool,
}

impl Machine {
    /// A machine running the system built from a fresh flake tree, with agent.toml written
    /// (`extra` goes at the top level, `system_extra` into `[system]`).
    pub fn new() -> Self {
        Self::with_config("", "")
    }

    /// Like [`Machine::new`], with agent.toml's extras.
    pub fn with_config(extra: &str, system_extra: &str) -> Self {
        Self::build(extra, system_extra, real::default_is_real())
    }

    /// A machine on the fake NixOS, for a test that pauses or kills a step at an exact point.
    pub fn fake() -> Self {
        Self::fake_with_config("", "")
    }

    pub fn fake_with_config(extra: &str, system_extra: &str) -> Self {
        Self::build(extra, system_extra, false)
    }

    fn build(extra: &str, system_extra: &str, real: bool) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tiffin-pipeline-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path().join("nixos");
        let publication = dir.path().join("pub").join(HOST);
        let state = dir.path().join("state");
        let files_root = dir.path().join("fsroot");
        let repo = dir.path().join("repo");
        for d in [&root, &publication, &files_root, &repo] {
            fs::create_dir_all(d).unwrap();
        }
        fs::create_dir_all(publication.join("logs")).unwrap();
        let initial_system = if real {
            fs::write(repo.join("flake.nix"), real::knob_flake_nix(HOST)).unwrap();
            fs::write(repo.join("configuration.nix"), real::FIRST_CONFIGURATION).unwrap();
            real::install_real_nixos(&root, &publication, &repo)
        } else {
            fs::write(repo.join("flake.nix"), "{ outputs = { self }: { }; }\n").unwrap();
            fs::write(repo.join("configuration.nix"), "{ ... }: { }\n").unwrap();
            install_fake_nixos(&root, &publication, &repo, HOST)
        };
        let m = Self {
            config_path: dir.path().join("agent.toml"),
            dir,
            root,
            publication,
            state,
            files_root,
            repo,
            initial_system,
            next_generation: 1,
            real,
        };
        m.write_config(extra, system_extra);
        m
    }

    pub fn config_text(&self, extra: &str, system_extra: &str) -> String {
        // Short by default so that failing verifications end quickly; `extra` may set its own.
        let verify = if extra.contains("verify_timeout") {
            ""
        } else {
            "verify_timeout = \"2s\""
        };
        format!(
            r#"host = "{HOST}"
source = "file://{publication}"
state_dir = "{state}"
socket = "{state}/agent.sock"
http_trigger = ""
{verify}
{extra}

{system}{system_extra}
"#,
            publication = self.publication.display(),
            state = self.state.display(),
            system = system_section(&self.root, &self.files_root),
        )
    }

    pub fn write_config(&self, extra: &str, system_extra: &str) {
        fs::write(&self.config_path, self.config_text(extra, system_extra)).unwrap();
    }

    pub fn config(&self) -> tiffin::config::AgentConfig {
        tiffin::config::AgentConfig::load(&self.config_path).expect("agent.toml")
    }

    /// Writes a file of the host's tree (creating parents).
    pub fn write(&self, rel: &str, content: &str) {
        let p = self.repo.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    pub fn remove(&self, rel: &str) {
        fs::remove_file(self.repo.join(rel)).unwrap();
    }

    /// Publishes the host's tree as the next generation: `gens/<N>/manifest.json`,
    /// `gens/<N>/tree/…`, then `current -> gens/<N>` replaced atomically.
    pub fn publish(&mut self) -> u64 {
        let g = self.next_generation;
        self.next_generation += 1;
        let walked = walk_tree(&self.repo, &self.repo).expect("walk");
        let m = Manifest::new(HOST, g, "2026-11-25T10:00:00Z".into(), entries_of(&walked));
        let gdir = self.publication.join(format!("gens/{g}"));
        fs::create_dir_all(gdir.join("tree")).unwrap();
        for w in &walked {
            let dest = gdir.join("tree").join(&w.entry.path);
            match w.entry.kind {
                EntryKind::Dir => fs::create_dir_all(dest).unwrap(),
                EntryKind::File => {
                    fs::copy(&w.source, dest).unwrap();
                }
            }
        }
        fs::write(gdir.join("manifest.json"), m.to_bytes()).unwrap();
        let tmp = self.publication.join(".current.tmp");
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(format!("gens/{g}"), &tmp).unwrap();
        fs::rename(&tmp, self.publication.join("current")).unwrap();
        g
    }

    fn once_command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tiffin"));
        c.args(["agent", "--once", "--config"])
            .arg(&self.config_path)
            .env("RUST_LOG", "warn")
            // The sandbox root the NixOS stand-in's switch-to-configuration acts on (real Nix).
            .env("TIFFIN_STANDIN_ROOT", &self.root);
        c
    }

    /// Runs `tiffin agent --once`; returns the exit code and what it printed.
    pub fn run_once(&self) -> (i32, String) {
        let out = self.once_command().output().expect("running tiffin");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    /// Starts `tiffin agent --once` in the background.
    pub fn spawn_once(&self) -> Child {
        self.once_command()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting tiffin")
    }

    /// Makes a fake step (`build`, `activate`, `boot`) wait until [`Machine::resume`]. Only the
    /// fake has those pause points: such a test runs on [`Machine::fake`]. `verify` is the test's
    /// own health check (see `pipeline_kill`), on either machine.
    pub fn pause(&self, step: &str) {
        assert!(
            !self.real || step == "verify",
            "pause-{step}: the real-Nix machine has no pause points; use Machine::fake()"
        );
        fs::write(self.root.join(format!("pause-{step}")), "").unwrap();
    }

    pub fn resume(&self, step: &str) {
        let _ = fs::remove_file(self.root.join(format!("pause-{step}")));
    }

    /// Waits until a fake step is paused; returns the pid of the waiting script.
    pub fn wait_paused(&self, step: &str) -> i32 {
        let p = self.root.join(format!("paused-{step}"));
        let pid = wait_for(&format!("{step} to pause"), || {
            fs::read_to_string(&p)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
        });
        pid
    }

    /// Waits until a paused fake step has ended.
    pub fn wait_exited(&self, step: &str) {
        let p = self.root.join(format!("exited-{step}"));
        wait_for(&format!("{step} to end"), || p.exists().then_some(()));
    }

    /// Waits until process `pid` (a fake script killed by the test) is gone.
    pub fn wait_gone(&self, pid: i32) {
        wait_for(&format!("process {pid} to end"), || {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .chars()
                .next();
            matches!(state, None | Some('Z') | Some('X')).then_some(())
        });
    }

    pub fn current(&self) -> PathBuf {
        fs::canonicalize(self.root.join("run/current-system")).unwrap()
    }
    pub fn profile(&self) -> PathBuf {
        fs::canonicalize(self.root.join("profiles/system")).unwrap()
    }
    pub fn boot_default(&self) -> PathBuf {
        fs::canonicalize(self.root.join("boot-default")).unwrap()
    }

    /// Every system the profile ever pointed at (its generation links).
    pub fn profile_history(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(self.root.join("profiles"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with("-link"))
            .map(|e| fs::canonicalize(e.path()).unwrap())
            .collect();
        v.sort();
        v
    }

    /// The commands run so far, one per line (on real Nix: the logging wrappers of `root/bin`
    /// and the stand-in's switch-to-configuration).
    pub fn calls(&self) -> String {
        fs::read_to_string(self.root.join("calls.log")).unwrap_or_default()
    }

    pub fn count_calls(&self, prefix: &str) -> usize {
        self.calls()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .count()
    }

    /// The agent's state.json.
    pub fn state_json(&self) -> serde_json::Value {
        let b = fs::read(self.state.join("state.json")).expect("state.json");
        serde_json::from_slice(&b).expect("state.json is JSON")
    }

    /// The names of uploaded reports (not seen.json), sorted.
    pub fn reports(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.publication.join("logs"))
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

    /// The one uploaded report for generation `g` with `outcome`, and its unzipped log.
    pub fn report(&self, g: u64, outcome: &str) -> (serde_json::Value, String) {
        let suffix = format!("-g{g}-{outcome}.json");
        let names: Vec<String> = self
            .reports()
            .into_iter()
            .filter(|n| n.ends_with(&suffix))
            .collect();
        assert_eq!(
            names.len(),
            1,
            "expected one *{suffix} report, uploaded: {:?}",
            self.reports()
        );
        let logs = self.publication.join("logs");
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(logs.join(&names[0])).unwrap()).unwrap();
        let log_name = json["log"]
            .as_str()
            .expect("report names its log")
            .to_string();
        assert_eq!(log_name, names[0].replace(".json", ".log.gz"));
        let mut text = String::new();
        flate2::read::GzDecoder::new(fs::File::open(logs.join(&log_name)).unwrap())
            .read_to_string(&mut text)
            .expect("the log is gzip'd text");
        (json, text)
    }

    pub fn seen(&self) -> serde_json::Value {
        serde_json::from_slice(&fs::read(self.publication.join("logs/seen.json")).unwrap()).unwrap()
    }
}

/// Polls `f` until it gives a value (at most 30 s).
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Installing files as root:root needs root. Under `CI=true` a missing prerequisite fails the
/// test; elsewhere the test is skipped with the reason printed.
pub fn have_root(test: &str) -> bool {
    use crate::support::{needs_root, prerequisite};
    prerequisite(test, needs_root("files are installed as root:root"))
}
