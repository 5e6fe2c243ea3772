//! What `fleet status` reads of one host: `current`, the generation's manifest, `logs/seen.json`
//! and the names of the reports, each from a file the host may have written (no symlink
//! followed, regular files only, size-capped). Which hosts there are, and finding one by name.

use crate::config::fleet::{check_unix_name, FleetConfig, FleetConfigError};
use crate::manifest::Manifest;
use crate::publication;
use crate::publication::report::{
    parse_report, parse_seen, parse_time, Report, ReportName, Seen, SEEN_NAME,
};
use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The most read from one host-written file (report, seen.json); a log's text is capped too.
pub const MAX_HOST_FILE: u64 = 1 << 20;
pub const MAX_LOG_TEXT: u64 = 16 << 20;

/// Why the fleet view could not be built.
#[derive(Debug, thiserror::Error)]
pub enum FleetViewError {
    #[error(transparent)]
    Config(#[from] FleetConfigError),
    #[error("{place}: {source}")]
    Io {
        place: String,
        source: std::io::Error,
    },
    #[error("no host {host:?}: it is not in fleet.toml and {chroot} has no directory for it")]
    UnknownHost { host: String, chroot: String },
    #[error("{0}")]
    Unknown(String),
}

/// Everything in one host's chroot that the fleet view reads.
#[derive(Clone, Debug, Default)]
pub struct HostRecords {
    pub host: String,
    pub dir: PathBuf,
    /// The generation `current` points to.
    pub published: Option<u64>,
    pub manifest: Option<Manifest>,
    /// Sorted by (time in the name, generation): oldest first.
    pub reports: Vec<ReportName>,
    pub seen: Option<Seen>,
    /// What could not be read, for the row's note; the row is still shown.
    pub problems: Vec<String>,
}

/// Reads a file the host wrote: no symlink followed, a regular file only, at most `max` bytes.
pub fn read_host_file(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.len() > max {
        return Err(std::io::Error::other(format!(
            "{} bytes, more than the {max} read",
            meta.len()
        )));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    f.take(max).read_to_end(&mut buf)?;
    Ok(buf)
}

impl HostRecords {
    /// Reads `<chroot>/<host>`; what is missing or unreadable is noted, not fatal.
    pub fn read(chroot: &Path, host: &str) -> Self {
        let dir = chroot.join(host);
        let mut r = HostRecords {
            host: host.to_string(),
            dir: dir.clone(),
            ..Default::default()
        };
        if !dir.is_dir() {
            return r;
        }
        let current = dir.join(publication::CURRENT);
        match std::fs::read_link(&current) {
            Ok(target) => {
                let target = target.to_string_lossy();
                match publication::parse_current_target(&target) {
                    Some(g) => {
                        r.published = Some(g);
                        let mpath = dir.join(publication::layout::manifest_rel(g));
                        let origin = mpath.display().to_string();
                        match std::fs::read(&mpath) {
                            Ok(bytes) => match Manifest::parse(&bytes, &origin) {
                                Ok(m) => r.manifest = Some(m),
                                Err(e) => r.problems.push(e.to_string()),
                            },
                            Err(e) => r.problems.push(format!("{origin}: {e}")),
                        }
                    }
                    None => r.problems.push(format!(
                        "{}: `current` points to {target:?}, not gens/<number>",
                        current.display()
                    )),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => r.problems.push(format!("{}: {e}", current.display())),
        }
        let logs = dir.join(publication::LOGS);
        match std::fs::read_dir(&logs) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    let Some(name) = name.to_str() else { continue };
                    if name == SEEN_NAME {
                        let path = logs.join(SEEN_NAME);
                        match read_host_file(&path, MAX_HOST_FILE)
                            .and_then(|b| parse_seen(&b).map_err(std::io::Error::other))
                        {
                            Ok(s) => r.seen = Some(s),
                            Err(e) => r.problems.push(format!("{}: {e}", path.display())),
                        }
                    } else if let Some(rn) = ReportName::parse(name) {
                        r.reports.push(rn);
                    }
                }
                r.reports.sort_by_key(ReportName::key);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => r.problems.push(format!("{}: {e}", logs.display())),
        }
        r
    }

    /// Opens one of this host's reports.
    pub fn load_report(&self, name: &ReportName) -> Result<Report, String> {
        let path = self.dir.join(publication::LOGS).join(&name.file);
        read_host_file(&path, MAX_HOST_FILE)
            .and_then(|b| parse_report(&b).map_err(std::io::Error::other))
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn seen_at(&self) -> Option<u64> {
        self.seen.as_ref().and_then(|s| parse_time(&s.last_seen))
    }
}

/// The hosts to show: fleet.toml's, plus chroot directories it does not list (`false`).
pub fn host_names(config: &FleetConfig) -> Vec<(String, bool)> {
    let listed: BTreeSet<&str> = config.hosts.keys().map(String::as_str).collect();
    let mut out: Vec<(String, bool)> = config.hosts.keys().map(|h| (h.clone(), true)).collect();
    if let Ok(entries) = std::fs::read_dir(&config.chroot) {
        let mut extra: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| !listed.contains(n.as_str()) && check_unix_name(n).is_ok())
            .collect();
        extra.sort();
        out.extend(extra.into_iter().map(|h| (h, false)));
    }
    out
}

/// Finds a host for `diff` and `logs`: in fleet.toml or with a chroot directory.
pub fn resolve_host(config: &FleetConfig, host: &str) -> Result<bool, FleetViewError> {
    let listed = config.hosts.contains_key(host);
    if listed {
        return Ok(true);
    }
    if check_unix_name(host).is_ok() && config.chroot.join(host).is_dir() {
        return Ok(false);
    }
    Err(FleetViewError::UnknownHost {
        host: host.into(),
        chroot: config.chroot.display().to_string(),
    })
}
