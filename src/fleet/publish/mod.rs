//! `tiffin fleet publish`: each host's directory, symlinks resolved, becomes a new immutable
//! generation under `<chroot>/<host>/gens/<N>` when its content changed; `current` then switches
//! to it in one rename (DESIGN §2, §7).
//!
//! A generation is written as `gens/.incoming-<N>-<pid>/`, made durable, renamed to `gens/<N>`
//! and only then linked from `current`, so a reader following `current` never sees a partial
//! tree. Any failure removes the incoming directory and leaves `current` where it was.
//!
//! This file decides, per host, what a run does (unchanged, would publish, publish) and runs the
//! hosts in parallel; `root` prepares and locks the chroot root, `stage` walks and copies a
//! host's tree, `generation` writes a generation and switches `current`, `prune` deletes old
//! generations and orphaned publications.

mod generation;
mod prune;
mod root;
mod stage;

pub(crate) use stage::set_owner_mode;
pub use stage::stage_host;

use super::nix_build::{build_system, BuildError, BuildMode};
use super::signing::{load_signing_key, resign, signature_is_stale};
use super::users::{self, MissingUser, Ownership, UserCheck};
use crate::config::FleetConfig;
use crate::manifest::{entries_of, tree_hash, EntryKind, Manifest, WalkError, WalkedEntry};
use crate::publication::{Publication, PublicationError, TREE};
use crate::runner::Runner;
use crate::sign::{SecretKey, SignError};
use generation::{ensure_skeleton, NewGeneration};
use stage::{build_view, materialize, walk_host, Modes};
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Modes inside a generation (DESIGN §2): the host's group may read, never write. The manifest
/// keeps the source modes, which the agent applies on the machine.
const GEN_DIR_MODE: u32 = 0o750;
pub(super) const GEN_FILE_MODE: u32 = 0o640;
const HOST_DIR_MODE: u32 = 0o755;
const LOGS_MODE: u32 = 0o700;

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
    UnknownHost(#[from] super::UnknownHost),
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
    NeverPublished(#[from] super::never_publish::Reached),
}

/// Why one host was not published.
#[derive(Debug, thiserror::Error)]
enum HostError {
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
}

/// Publishes the selected hosts (all by default). Per-host failures are in the report; the
/// error is for what stops every host (an unknown host name, an unusable chroot root).
pub fn publish(
    fleet_dir: &Path,
    config: &FleetConfig,
    opts: &PublishOptions,
) -> Result<PublishReport, PublishError> {
    publish_with_progress(fleet_dir, config, opts, &|_| {})
}

/// [`publish`], calling `on_done` as each host finishes (from worker threads).
pub fn publish_with_progress(
    fleet_dir: &Path,
    config: &FleetConfig,
    opts: &PublishOptions,
    on_done: &(dyn Fn(&HostReport) + Sync),
) -> Result<PublishReport, PublishError> {
    let hosts = super::select_hosts(config, &opts.hosts)?;
    let mut report = PublishReport::default();
    let signer = load_signing_key(fleet_dir, config, opts, &mut report.warnings)?;
    let _lock = root::prepare_chroot_root(config, opts, &mut report.warnings)?;
    let mut ctx = RunContext::new(fleet_dir, config, opts);
    ctx.signer = signer;
    if users::is_root() && !opts.keep_owner {
        ctx.shared_groups = users::shared_primary_groups(config);
    }
    report.hosts = in_parallel(&hosts, opts.jobs, |host| {
        let r = ctx.publish_host(host);
        on_done(&r);
        r
    });
    report.warnings.extend(ctx.warnings());
    report.orphans = prune::orphans(config, opts)?;
    Ok(report)
}

/// Publishes one host (the library entry the agent tests and the demo use).
pub fn publish_host(
    fleet_dir: &Path,
    config: &FleetConfig,
    host: &str,
    opts: &PublishOptions,
) -> Result<HostReport, PublishError> {
    let opts = PublishOptions {
        hosts: vec![host.to_string()],
        prune: false,
        ..opts.clone()
    };
    let mut report = publish(fleet_dir, config, &opts)?;
    Ok(report.hosts.remove(0))
}

/// Runs `work` on every item with at most `jobs` threads; results keep the items' order.
pub(crate) fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    jobs: usize,
    work: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, items.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(item) = items.get(i) else { break };
                let r = work(item);
                if let Ok(mut v) = slots.lock() {
                    v[i] = Some(r);
                }
            });
        }
    });
    slots
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect()
}

/// What every host of one run shares.
struct RunContext<'a> {
    fleet_dir: &'a Path,
    config: &'a FleetConfig,
    opts: &'a PublishOptions,
    runner: Runner,
    /// Hosts published without chown because this is not root (one warning for all).
    unowned: Mutex<Vec<String>>,
    /// Hosts whose user is missing on this (non-root) machine.
    missing_users: Mutex<Vec<String>>,
    /// Other per-host warnings (e.g. a generation that could not be pruned).
    notes: Mutex<Vec<String>>,
    /// Signs every new manifest, when the fleet has a key.
    signer: Option<SecretKey>,
    /// Hosts whose user's primary group is not its own (root only): refused.
    shared_groups: HashMap<String, users::SharedGroup>,
}

impl<'a> RunContext<'a> {
    fn new(fleet_dir: &'a Path, config: &'a FleetConfig, opts: &'a PublishOptions) -> Self {
        Self {
            fleet_dir,
            config,
            opts,
            runner: Runner::new(),
            unowned: Mutex::default(),
            missing_users: Mutex::default(),
            notes: Mutex::default(),
            signer: None,
            shared_groups: HashMap::new(),
        }
    }

    fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let take = |m: &Mutex<Vec<String>>| {
            let mut v = m.lock().map(|v| v.clone()).unwrap_or_default();
            v.sort();
            v
        };
        let unowned = take(&self.unowned);
        let missing = take(&self.missing_users);
        if !unowned.is_empty() || !missing.is_empty() {
            let mut w = format!(
                "not running as root: publications stay owned by uid {} (sshd needs them owned by root and the hosts' groups; publish as root on the server)",
                nix::unistd::geteuid()
            );
            if !missing.is_empty() {
                w.push_str(&format!(
                    "; no system user for host(s) {} (`tiffin fleet sshd-config` shows how to create them)",
                    missing.join(", ")
                ));
            }
            out.push(w);
        }
        out.extend(take(&self.notes));
        out
    }

    fn publish_host(&self, host: &str) -> HostReport {
        let start = Instant::now();
        let mut report = HostReport {
            host: host.to_string(),
            result: HostResult::Failed {
                error: String::new(),
            },
            files: 0,
            bytes: 0,
            expected_system: None,
            elapsed: Duration::ZERO,
        };
        report.result = match self.try_publish_host(host, &mut report) {
            Ok(r) => r,
            Err(e) => HostResult::Failed {
                error: e.to_string(),
            },
        };
        report.elapsed = start.elapsed();
        report
    }

    fn try_publish_host(
        &self,
        host: &str,
        report: &mut HostReport,
    ) -> Result<HostResult, HostError> {
        let walked = walk_host(self.fleet_dir, self.config, host)?;
        let entries = entries_of(&walked);
        let new_hash = tree_hash(&entries);
        report.files = entries.iter().filter(|e| e.kind == EntryKind::File).count();
        report.bytes = entries.iter().filter_map(|e| e.size).sum();

        if let Some(shared) = self.shared_groups.get(host) {
            return Err(shared.clone().into());
        }
        let owner = self.owner_of(host)?;
        let publication = Publication::new(&self.config.chroot, host);
        let current = match publication.current_manifest() {
            Ok(m) => m,
            Err(e) => {
                push(
                    &self.notes,
                    &format!("host {host}: the live generation is unreadable ({e}); publishing a new one"),
                );
                None
            }
        };
        if let Some(mode) = self.opts.build {
            report.expected_system = self.build_first(host, &walked, mode)?;
        }
        if let Some(cur) = &current {
            if self.is_unchanged(cur, &new_hash, &report.expected_system) {
                if !self.opts.dry_run {
                    ensure_skeleton(&publication, owner)?;
                    if let Some(k) = self.signer.as_ref().filter(|_| signature_is_stale(cur)) {
                        resign(&publication, cur, k, owner)?;
                    }
                }
                return Ok(HostResult::Unchanged {
                    generation: cur.generation,
                });
            }
        }
        let generation = publication.next_generation()?;
        if self.opts.dry_run {
            return Ok(HostResult::WouldPublish { generation });
        }
        let new = NewGeneration {
            host,
            generation,
            walked: &walked,
            entries,
            expected_system: report.expected_system.clone(),
            signer: self.signer.as_ref(),
            owner,
        };
        generation::write_and_switch(&publication, new, current.as_ref())?;
        prune::prune_generations(
            &publication,
            generation,
            self.config.keep_generations,
            &self.notes,
        );
        Ok(HostResult::Published {
            generation,
            previous: current.map(|m| m.generation),
        })
    }

    /// Who owns the host's publication: its user and group as root, else the publisher (noted
    /// for the run's one warning).
    fn owner_of(&self, host: &str) -> Result<Ownership, HostError> {
        if self.opts.keep_owner {
            return Ok(Ownership::Publisher);
        }
        let hc = &self.config.hosts[host];
        Ok(match users::resolve_ownership(self.config, host, hc)? {
            UserCheck::Found(o) => {
                if o == Ownership::Publisher {
                    push(&self.unowned, host);
                }
                o
            }
            UserCheck::MissingUnprivileged => {
                push(&self.missing_users, host);
                Ownership::Publisher
            }
        })
    }

    /// Builds (or dry-builds) the host's build view in a temporary directory: the expected
    /// system, when the build gives one.
    fn build_first(
        &self,
        host: &str,
        walked: &[WalkedEntry],
        mode: BuildMode,
    ) -> Result<Option<String>, HostError> {
        let staging = tempfile::Builder::new()
            .prefix(&format!("tiffin-build-{host}-"))
            .tempdir()
            .map_err(StageError::Io)?;
        let tree = staging.path().join(TREE);
        materialize(
            &build_view(walked),
            &tree,
            Modes::Source,
            Ownership::Publisher,
            None,
        )?;
        let attr = self.config.hosts[host].attr_or_default(host);
        Ok(build_system(
            &self.config.build,
            &self.runner,
            &tree,
            attr,
            mode,
        )?)
    }

    /// The live generation `cur` already is what this run would publish: same tree, same
    /// built system (when built), and signed by the current key (a generation unsigned before
    /// `keygen`, or signed by a replaced key, is republished so that trusting agents accept it).
    fn is_unchanged(&self, cur: &Manifest, new_hash: &str, system: &Option<String>) -> bool {
        let same_system =
            self.opts.build != Some(BuildMode::Build) || cur.expected_system == *system;
        let signed_right = self
            .signer
            .as_ref()
            .map_or(true, |k| k.public().verify_manifest(cur).is_ok());
        cur.tree_hash == new_hash && same_system && signed_right
    }
}

fn push(m: &Mutex<Vec<String>>, s: &str) {
    if let Ok(mut v) = m.lock() {
        v.push(s.to_string());
    }
}
