//! A synthetic fleet for `fleet status|diff|logs` tests and the benchmark: a fleet.toml and a
//! chroot in a temp dir, filled with real files in the publication layout (docs/publication.md), written
//! with the agent's own `Report`/`Seen` types and name helpers.
#![allow(dead_code)]

use flate2::write::GzEncoder;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};
use tiffin::config::fleet::FleetConfig;
use tiffin::manifest::Manifest;
use tiffin::publication::report::{report_base, rfc3339, Report, Seen, SEEN_NAME};
use tiffin::status::Outcome;

pub const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOhfranTNzd5iz9u62K9DBWkqC9JBYkSle3Nr25o6PSa root@laptop";

pub struct Fleet {
    pub tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub chroot: PathBuf,
}

impl Fleet {
    /// A fleet repository listing `hosts`, its chroot beside it.
    pub fn new(hosts: &[&str]) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("tiffin-fleetstatus-")
            .tempdir()
            .expect("temp dir");
        let dir = tmp.path().join("repo");
        let chroot = tmp.path().join("chroot");
        fs::create_dir_all(&dir).unwrap();
        fs::create_dir_all(&chroot).unwrap();
        let mut toml = format!("chroot = {:?}\nserver = \"fleet.test\"\n", chroot);
        for h in hosts {
            toml.push_str(&format!("\n[hosts.{h}]\nkey = \"{KEY}\"\n"));
            fs::create_dir_all(chroot.join(h)).unwrap();
        }
        fs::write(dir.join("fleet.toml"), toml).unwrap();
        Fleet { tmp, dir, chroot }
    }

    pub fn config(&self) -> FleetConfig {
        FleetConfig::load(&self.dir).expect("fleet.toml")
    }

    pub fn host_dir(&self, host: &str) -> PathBuf {
        self.chroot.join(host)
    }

    pub fn logs(&self, host: &str) -> PathBuf {
        let l = self.host_dir(host).join("logs");
        fs::create_dir_all(&l).unwrap();
        l
    }

    /// Publishes generation `g` (an empty tree) and points `current` at it, atomically.
    pub fn publish(&self, host: &str, g: u64, at: u64, expected_system: Option<&str>) {
        let gdir = self.host_dir(host).join("gens").join(g.to_string());
        fs::create_dir_all(&gdir).unwrap();
        let mut m = Manifest::new(host, g, rfc3339(at), Vec::new());
        m.expected_system = expected_system.map(str::to_string);
        fs::write(gdir.join("manifest.json"), m.to_bytes()).unwrap();
        let tmp = self.host_dir(host).join(".current.new");
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(format!("gens/{g}"), &tmp).unwrap();
        fs::rename(&tmp, self.host_dir(host).join("current")).unwrap();
    }

    /// Uploads a report and its log as the agent names them; returns the JSON's path.
    pub fn report(&self, host: &str, r: ReportSpec) -> PathBuf {
        let base = report_base(r.finished, r.generation, r.outcome);
        let report = Report {
            host: host.into(),
            generation: r.generation,
            outcome: r.outcome,
            failed_step: None,
            message: r.message.map(str::to_string),
            started: rfc3339(r.finished.saturating_sub(30)),
            finished: rfc3339(r.finished),
            system_before: Some("/nix/store/aaaa-nixos-system-before".into()),
            system_after: r.system_after.clone(),
            reboot_needed: r.reboot_needed,
            durations: BTreeMap::from([("build".to_string(), 12.5)]),
            agent_version: "0.1.0".into(),
            log: format!("{base}.log.gz"),
            publication: None,
            built_by: None,
            cache_bytes: None,
            note: None,
            drifted_from: None,
        };
        let logs = self.logs(host);
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(r.log_text.as_bytes()).unwrap();
        fs::write(logs.join(&report.log), enc.finish().unwrap()).unwrap();
        let path = logs.join(format!("{base}.json"));
        // Written aside and renamed in, as the agent's upload does.
        let tmp = logs.join(format!(".{base}.json.part"));
        // The step as the spec gives it, even one no agent writes (a hostile host's).
        let mut json = serde_json::to_value(&report).unwrap();
        json["failed_step"] = r.failed_step.into();
        fs::write(&tmp, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
        fs::rename(&tmp, &path).unwrap();
        path
    }

    /// Uploads `logs/seen.json` exactly as given.
    pub fn seen_raw(&self, seen: &Seen) {
        let logs = self.logs(&seen.host);
        let tmp = logs.join(".seen.json.part");
        fs::write(&tmp, serde_json::to_vec_pretty(seen).unwrap()).unwrap();
        fs::rename(&tmp, logs.join(SEEN_NAME)).unwrap();
    }

    /// Uploads `logs/seen.json`.
    pub fn seen(&self, host: &str, s: SeenSpec) {
        let seen = Seen {
            host: host.into(),
            last_seen: rfc3339(s.at),
            applied_generation: s.applied,
            running_system: s.running_system.clone(),
            booted_system: s.running_system.clone(),
            agent_version: "0.1.0".into(),
            interval_secs: s.interval_secs,
            updating_to: s.updating_to,
            reboot_needed: s.reboot_needed,
            tiffin_system: None,
            rolled_back_to: None,
        };
        let logs = self.logs(host);
        let tmp = logs.join(".seen.json.part");
        fs::write(&tmp, serde_json::to_vec_pretty(&seen).unwrap()).unwrap();
        fs::rename(&tmp, logs.join(SEEN_NAME)).unwrap();
    }
}

/// Sets a file's modification time (to simulate when it arrived).
pub fn set_arrival(path: &Path, unix: u64) {
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(UNIX_EPOCH + Duration::from_secs(unix))
        .unwrap();
}

#[derive(Clone, Debug)]
pub struct ReportSpec {
    pub generation: u64,
    pub outcome: Outcome,
    pub finished: u64,
    pub failed_step: Option<&'static str>,
    pub message: Option<&'static str>,
    pub system_after: Option<String>,
    pub reboot_needed: bool,
    pub log_text: String,
}

impl ReportSpec {
    pub fn new(generation: u64, outcome: Outcome, finished: u64) -> Self {
        ReportSpec {
            generation,
            outcome,
            finished,
            failed_step: match outcome {
                Outcome::Failed => Some("build"),
                Outcome::RolledBack => Some("verify"),
                _ => None,
            },
            message: match outcome {
                Outcome::Failed => Some("error: builder for '/nix/store/x.drv' failed"),
                Outcome::RolledBack => Some("health check `ping -c1 gw` failed"),
                _ => None,
            },
            system_after: match outcome {
                Outcome::Updated | Outcome::UpToDate => Some(system(generation)),
                _ => None,
            },
            reboot_needed: false,
            log_text: format!("cycle for g{generation}: {outcome:?}\n"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct SeenSpec {
    pub at: u64,
    pub applied: Option<u64>,
    pub running_system: Option<String>,
    pub interval_secs: Option<u64>,
    pub updating_to: Option<u64>,
    pub reboot_needed: Option<bool>,
}

impl SeenSpec {
    /// Seen at `at`, running generation `applied` (and its system).
    pub fn running(applied: u64, at: u64) -> Self {
        SeenSpec {
            at,
            applied: Some(applied),
            running_system: Some(system(applied)),
            interval_secs: Some(600),
            updating_to: None,
            reboot_needed: Some(false),
        }
    }
}

/// A distinct store path per generation.
pub fn system(generation: u64) -> String {
    format!("/nix/store/{generation:0>32}-nixos-system-g{generation}")
}
