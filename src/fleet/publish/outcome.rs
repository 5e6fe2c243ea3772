//! What a publish run is asked (`PublishOptions`) and what it answers (`PublishReport`, one
//! `HostReport` per host, orphans), its errors, and the modes of a publication. Every part of
//! `publish` uses these; this file uses none of them.

use crate::fleet::nix_build::{BuildError, BuildMode};
use crate::fleet::users::{self, MissingUser};
use crate::manifest::WalkError;
use crate::publication::PublicationError;
use crate::sign::SignError;
use std::io;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// Modes inside a generation (docs/publication.md): the host's group may read, never write. The manifest
/// keeps the source modes, which the agent applies on the machine.
pub(super) const GEN_DIR_MODE: u32 = 0o750;
pub(crate) const GEN_FILE_MODE: u32 = 0o640;
pub(super) const HOST_DIR_MODE: u32 = 0o755;
pub(super) const LOGS_MODE: u32 = 0o700;

/// What `publish` does.
#[derive(Clone, Debug)]
pub struct PublishOptions {
    /// Hosts to publish; empty: all in fleet.toml.
    pub hosts: Vec<String>,
    /// Build (or dry-build) each host first; a failed build stops its publication.
    pub build: Option<BuildMode>,
    /// Decide and report, write nothing.
    pub dry_run: bool,
    /// Delete the publications of hosts no longer in fleet.toml.
    pub prune: bool,
    /// Hosts processed at the same time.
    pub jobs: usize,
    /// Leave everything owned by the publisher even as root, without looking up host users:
    /// a sandbox whose hosts have no system users and that no sshd serves (`tiffin demo`).
    pub keep_owner: bool,
    /// `--unsigned`: publish without signing (sftp:// agents refuse such generations unless
    /// their agent.toml says `allow_unsigned = true`). Without it, a fleet with no signing key
    /// is refused.
    pub unsigned: bool,
    /// The change note carried in each new generation's manifest (`-m`; the CLI's default is the
    /// fleet repository's last commit subject, `fleet::git_note`).
    pub note: Option<String>,
    /// The release id written into each new manifest (`fleet publish --staged`, `fleet
    /// rollout`); `None`: none.
    pub release: Option<String>,
}

impl Default for PublishOptions {
    fn default() -> Self {
        Self {
            hosts: Vec::new(),
            build: None,
            dry_run: false,
            prune: false,
            jobs: 4,
            keep_owner: false,
            unsigned: false,
            note: None,
            release: None,
        }
    }
}

/// How one host's publication ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostResult {
    /// A new generation is live.
    Published {
        generation: u64,
        previous: Option<u64>,
    },
    /// Same content as the live generation: nothing was written.
    Unchanged { generation: u64 },
    /// `--dry-run`: this generation would be published.
    WouldPublish { generation: u64 },
    /// Nothing was published for this host.
    Failed { error: String },
}

/// One host's line of the closing table.
#[derive(Clone, Debug)]
pub struct HostReport {
    pub host: String,
    pub result: HostResult,
    /// Files and their bytes in the host's tree (0 when it could not be read).
    pub files: usize,
    pub bytes: u64,
    pub expected_system: Option<String>,
    pub elapsed: Duration,
    /// With `--build`: the paths and bytes of the host's binary cache.
    pub cache: Option<(usize, u64)>,
}

impl HostReport {
    pub fn failed(&self) -> bool {
        matches!(self.result, HostResult::Failed { .. })
    }
    /// The generation live (or about to be) after this run.
    pub fn generation(&self) -> Option<u64> {
        match self.result {
            HostResult::Published { generation, .. }
            | HostResult::Unchanged { generation }
            | HostResult::WouldPublish { generation } => Some(generation),
            HostResult::Failed { .. } => None,
        }
    }
}

/// A publication under the chroot root whose host is no longer in fleet.toml.
#[derive(Clone, Debug)]
pub struct Orphan {
    pub host: String,
    pub dir: PathBuf,
    /// Deleted by `--prune`.
    pub removed: bool,
}

/// Everything a publish run did.
#[derive(Clone, Debug, Default)]
pub struct PublishReport {
    /// In fleet.toml order.
    pub hosts: Vec<HostReport>,
    pub orphans: Vec<Orphan>,
    /// Said once per run (e.g. not running as root).
    pub warnings: Vec<String>,
    /// One row per fleet.toml `[[mirrors]]` entry, pushed after the hosts (none on a dry run).
    pub mirrors: Vec<crate::fleet::mirror::MirrorReport>,
}

impl PublishReport {
    pub fn failed(&self) -> usize {
        self.hosts.iter().filter(|h| h.failed()).count()
    }
}

/// Errors that stop the whole run (per-host errors land in the host's report instead).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    UnknownHost(#[from] crate::fleet::UnknownHost),
    #[error("chroot root {path}: {source}")]
    ChrootRoot { path: PathBuf, source: io::Error },
    #[error("{path}: cannot take the publish lock: {source}")]
    Lock { path: PathBuf, source: io::Error },
    #[error("{path}: cannot delete the publication of a host no longer in fleet.toml: {source}")]
    Prune { path: PathBuf, source: io::Error },
    #[error("signing key (fleet.toml `signing_key`): {0}")]
    SigningKey(#[from] SignError),
    #[error("no signing key: {path} does not exist. Publications are signed by default and sftp:// agents refuse unsigned ones: create the key with `tiffin fleet keygen` (and give the machines its .pub as `trusted_key`), or publish unsigned on purpose with `--unsigned`")]
    NoSigningKey { path: PathBuf },
}

/// Why a host's tree could not be staged.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("{path}: host directory does not exist (set `dir` in fleet.toml or create it)")]
    MissingHostDir { path: PathBuf },
    #[error(transparent)]
    Walk(#[from] WalkError),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{path}: file changed while it was being published; publish again")]
    Changed { path: PathBuf },
    #[error(transparent)]
    NeverPublished(#[from] crate::fleet::never_publish::Reached),
    #[error("{path}: cannot seal: {why}")]
    Seal { path: PathBuf, why: String },
}

/// Why one host was not published.
#[derive(Debug, thiserror::Error)]
pub(super) enum HostError {
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error(transparent)]
    User(#[from] MissingUser),
    #[error(transparent)]
    SharedGroup(#[from] users::SharedGroup),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Publication(#[from] PublicationError),
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Exporting or linking the host's binary cache failed.
    #[error("binary cache: {0}")]
    Cache(String),
}

/// Adds a note for the run's warnings.
pub(super) fn push(m: &Mutex<Vec<String>>, s: &str) {
    if let Ok(mut v) = m.lock() {
        v.push(s.to_string());
    }
}
