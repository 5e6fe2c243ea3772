//! `fleet publish`'s push to fleet.toml `[[mirrors]]`, after the primary's publish and under its
//! lock: per mirror and host, the generations the mirror lacks (only the files it lacks travel),
//! then `current` (and `current.txt`) switched in one rename, then the generations the primary
//! pruned. A mirror that fails does not fail the publish: its row of the closing table says
//! why, `state` (`<chroot>/.tiffin-mirrors.json`) keeps what each mirror has, the next publish
//! retries, and `fleet status` shows one line per mirror (`status`).

mod job;
mod plan;
mod remote;
mod rsync;
mod sftp;
mod ssh_master;
pub mod state;
pub mod status;

use crate::config::mirrors::{MirrorConfig, MirrorUrl};
use crate::config::FleetConfig;
use crate::publication::Publication;
use job::{owner_names, HostJob, HostPushed};
use state::{MirrorRecord, MirrorState};
use std::path::Path;
use std::time::{Duration, Instant};

/// One mirror's row of the closing table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorReport {
    /// The mirror's URL as fleet.toml writes it.
    pub url: String,
    pub result: MirrorResult,
    /// Hosts whose publication the mirror now has as the primary does.
    pub hosts: usize,
    /// Files and bytes sent to it in this run.
    pub files: usize,
    pub bytes: u64,
    pub elapsed: Duration,
}

/// How one mirror's push ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MirrorResult {
    /// Something changed on the mirror.
    Pushed,
    /// It already had everything.
    Unchanged,
    /// It was not (fully) brought up to date; retried by the next publish.
    Failed { error: String },
}

/// The ways to reach a mirror.
enum Pusher {
    Sftp(sftp::SftpPusher),
    Rsync(rsync::RsyncPusher),
    /// `s3://`: uploaded through object_store (`fleet::objstore`).
    S3(crate::fleet::objstore::S3Target),
}

impl Pusher {
    fn connect(m: &MirrorConfig, fleet_dir: &Path, config: &FleetConfig) -> Result<Self, String> {
        let url = m.parsed()?;
        if let MirrorUrl::S3 { .. } = url {
            let target = crate::fleet::objstore::S3Target::new(&m.url, &config.s3)
                .map_err(|e| e.to_string())?;
            return Ok(Pusher::S3(target));
        }
        let (identity, known_hosts) = m
            .keys(fleet_dir)
            .ok_or("fleet.toml [[mirrors]] needs `identity` and `known_hosts`")?;
        match url {
            MirrorUrl::Sftp(s) => Ok(Pusher::Sftp(sftp::SftpPusher::connect(
                &s,
                &identity,
                &known_hosts,
            )?)),
            MirrorUrl::RsyncSsh(s) => Ok(Pusher::Rsync(rsync::RsyncPusher::new(
                &s,
                &identity,
                &known_hosts,
            )?)),
            MirrorUrl::S3 { .. } => unreachable!("handled above"),
        }
    }

    fn push_host(&mut self, job: &HostJob) -> Result<HostPushed, String> {
        match self {
            Pusher::Sftp(p) => p.push_host(job),
            Pusher::Rsync(p) => p.push_host(job),
            Pusher::S3(t) => {
                let opts = crate::fleet::objstore::PushOptions::default();
                let s = crate::fleet::objstore::push_host(
                    t,
                    &job.object_path,
                    &job.publication.dir,
                    &opts,
                )
                .map_err(|e| e.to_string())?;
                Ok(HostPushed {
                    generation: s.generation.unwrap_or(job.live),
                    files: s.uploaded + s.copied,
                    bytes: s.uploaded_bytes,
                    changed: s.uploaded + s.copied + s.deleted > 0,
                })
            }
        }
    }
}

/// Pushes `hosts` (those with a live generation) to every mirror; returns one row per mirror
/// and the warnings of the run (a state file that could not be read or written).
pub fn push_all(
    fleet_dir: &Path,
    config: &FleetConfig,
    hosts: &[String],
) -> (Vec<MirrorReport>, Vec<String>) {
    let mut warnings = Vec::new();
    let mut state = MirrorState::load(&config.chroot).unwrap_or_else(|e| {
        warnings.push(format!(
            "{e}: the mirrors' record is unreadable; starting a new one"
        ));
        MirrorState::default()
    });
    let jobs = host_jobs(config, hosts);
    let mut reports = Vec::new();
    for (report, record) in push_in_parallel(fleet_dir, config, &jobs, &state) {
        state.mirrors.insert(report.url.clone(), record);
        reports.push(report);
    }
    if let Err(e) = state.save(&config.chroot) {
        warnings.push(format!(
            "{}: {e}: the mirrors' record was not saved; `fleet status` may show them behind",
            MirrorState::path(&config.chroot).display()
        ));
    }
    (reports, warnings)
}

/// Every mirror at the same time, each with its own session and a copy of its record.
fn push_in_parallel(
    fleet_dir: &Path,
    config: &FleetConfig,
    jobs: &[HostJob],
    state: &MirrorState,
) -> Vec<(MirrorReport, MirrorRecord)> {
    let record_of = |m: &MirrorConfig| state.mirrors.get(&m.url).cloned().unwrap_or_default();
    std::thread::scope(|s| {
        let handles: Vec<_> = config
            .mirrors
            .iter()
            .map(|m| {
                let mut record = record_of(m);
                s.spawn(move || (push_one(fleet_dir, config, m, jobs, &mut record), record))
            })
            .collect();
        handles
            .into_iter()
            .zip(&config.mirrors)
            .map(|(h, m)| {
                h.join().unwrap_or_else(|_| {
                    let error = "the push stopped unexpectedly (a panic)".to_string();
                    let mut record = record_of(m);
                    record.last_error = Some(error.clone());
                    let report = MirrorReport {
                        url: m.url.clone(),
                        result: MirrorResult::Failed { error },
                        hosts: 0,
                        files: 0,
                        bytes: 0,
                        elapsed: Duration::ZERO,
                    };
                    (report, record)
                })
            })
            .collect()
    })
}

fn host_jobs(config: &FleetConfig, hosts: &[String]) -> Vec<HostJob> {
    hosts
        .iter()
        .filter_map(|host| {
            let publication = Publication::new(&config.chroot, host);
            let live = publication.current_generation().ok().flatten()?;
            let mut generations = publication.generations().ok()?;
            generations.sort_unstable();
            let logs_owner = owner_names(&publication.logs()).ok();
            Some(HostJob {
                host: host.clone(),
                publication,
                live,
                generations,
                logs_owner,
                object_path: crate::fleet::objstore::host_path(config, host),
            })
        })
        .collect()
}

fn push_one(
    fleet_dir: &Path,
    config: &FleetConfig,
    m: &MirrorConfig,
    jobs: &[HostJob],
    record: &mut MirrorRecord,
) -> MirrorReport {
    let start = Instant::now();
    let now = crate::publication::report::rfc3339(crate::status::unix_now());
    record.last_attempt = Some(now.clone());
    let mut report = MirrorReport {
        url: m.url.clone(),
        result: MirrorResult::Unchanged,
        hosts: 0,
        files: 0,
        bytes: 0,
        elapsed: Duration::ZERO,
    };
    let mut errors = Vec::new();
    match Pusher::connect(m, fleet_dir, config) {
        Err(e) => errors.push(e),
        Ok(mut pusher) => {
            for job in jobs {
                match pusher.push_host(job) {
                    Ok(done) => {
                        record.hosts.insert(job.host.clone(), done.generation);
                        report.hosts += 1;
                        report.files += done.files;
                        report.bytes += done.bytes;
                        if done.changed {
                            report.result = MirrorResult::Pushed;
                        }
                    }
                    Err(e) => errors.push(format!("host {}: {e}", job.host)),
                }
            }
        }
    }
    if errors.is_empty() {
        record.last_error = None;
        record.last_success = Some(now);
    } else {
        let error = errors.join("; ");
        record.last_error = Some(error.clone());
        report.result = MirrorResult::Failed { error };
    }
    report.elapsed = start.elapsed();
    report
}
