//! `tiffin fleet publish`: each host's directory, symlinks resolved, becomes a new immutable
//! generation under `<chroot>/<host>/gens/<N>` when its content changed; `current` then switches
//! to it in one rename (DESIGN §2, §7).
//!
//! A generation is written as `gens/.incoming-<N>-<pid>/`, made durable, renamed to `gens/<N>`
//! and only then linked from `current`, so a reader following `current` never sees a partial
//! tree. Any failure removes the incoming directory and leaves `current` where it was.

use super::nix_build::{build_system, BuildError, BuildMode};
use super::signing::{load_signing_key, resign, signature_is_stale};
use super::users::{self, MissingUser, Ownership, UserCheck};
use crate::config::FleetConfig;
use crate::fsutil::{self, with_path, DirGuard};
use crate::hash;
use crate::manifest::{
    entries_of, tree_hash, walk_tree, EntryKind, Manifest, WalkError, WalkedEntry, MANIFEST_FILE,
    MAX_MANIFEST_BYTES,
};
use crate::publication::{Publication, PublicationError, INCOMING_PREFIX, TREE};
use crate::runner::Runner;
use crate::sign::{SecretKey, SignError};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Modes inside a generation (DESIGN §2): the host's group may read, never write. The manifest
/// keeps the source modes, which the agent applies on the machine.
const GEN_DIR_MODE: u32 = 0o750;
pub(super) const GEN_FILE_MODE: u32 = 0o640;
const HOST_DIR_MODE: u32 = 0o755;
const LOGS_MODE: u32 = 0o700;
/// Prefix of an old generation being deleted (renamed out of `gens/<N>` first).
const PRUNING_PREFIX: &str = ".pruning-";
/// The lock that keeps two publish runs on one chroot root from interleaving.
const LOCK_FILE: &str = ".tiffin-publish.lock";

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
    let _lock = prepare_chroot_root(config, opts, &mut report.warnings)?;
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
    report.orphans = orphans(config, opts)?;
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

/// Creates the chroot root when missing, warns when sshd would refuse it, and takes the lock.
fn prepare_chroot_root(
    config: &FleetConfig,
    opts: &PublishOptions,
    warnings: &mut Vec<String>,
) -> Result<Option<nix::fcntl::Flock<File>>, PublishError> {
    let root = &config.chroot;
    let err = |source: io::Error| PublishError::ChrootRoot {
        path: root.clone(),
        source,
    };
    if opts.dry_run {
        return Ok(None);
    }
    if !root.is_dir() {
        fs::create_dir_all(root).map_err(err)?;
        fs::set_permissions(root, fs::Permissions::from_mode(HOST_DIR_MODE)).map_err(err)?;
    }
    if users::is_root() && !opts.keep_owner {
        if let Some(why) = chroot_path_problem(root) {
            warnings.push(format!(
                "sshd will refuse ChrootDirectory under {}: {why}",
                root.display()
            ));
        }
    }
    let path = root.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|source| PublishError::Lock {
            path: path.clone(),
            source,
        })?;
    use nix::fcntl::{Flock, FlockArg};
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(Some(l)),
        Err((file, nix::errno::Errno::EWOULDBLOCK)) => {
            tracing::info!(
                "waiting for another `tiffin fleet publish` on {}",
                root.display()
            );
            Flock::lock(file, FlockArg::LockExclusive)
                .map(Some)
                .map_err(|(_, e)| PublishError::Lock {
                    path,
                    source: e.into(),
                })
        }
        Err((_, e)) => Err(PublishError::Lock {
            path,
            source: e.into(),
        }),
    }
}

/// sshd wants every component of a chroot path owned by root and writable by no one else.
fn chroot_path_problem(root: &Path) -> Option<String> {
    let real = fs::canonicalize(root).ok()?;
    for dir in real.ancestors() {
        let m = fs::metadata(dir).ok()?;
        if m.uid() != 0 {
            return Some(format!("{} is not owned by root", dir.display()));
        }
        if m.mode() & 0o022 != 0 {
            return Some(format!(
                "{} is writable by group or others (mode {:o})",
                dir.display(),
                m.mode() & 0o7777
            ));
        }
    }
    None
}

/// Publications under the chroot root whose host left fleet.toml; deleted with `--prune`.
fn orphans(config: &FleetConfig, opts: &PublishOptions) -> Result<Vec<Orphan>, PublishError> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(&config.chroot) else {
        return Ok(out);
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| !n.starts_with('.') && !config.hosts.contains_key(n))
        .collect();
    names.sort();
    for host in names {
        let p = Publication::new(&config.chroot, &host);
        // Only what looks like a publication: never delete a stranger's directory.
        if !p.gens().is_dir() {
            continue;
        }
        let removed = opts.prune && !opts.dry_run;
        if removed {
            fs::remove_dir_all(&p.dir).map_err(|source| PublishError::Prune {
                path: p.dir.clone(),
                source,
            })?;
        }
        out.push(Orphan {
            host,
            dir: p.dir,
            removed,
        });
    }
    Ok(out)
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
        let hc = &self.config.hosts[host];
        let walked = walk_host(self.fleet_dir, self.config, host)?;
        let entries = entries_of(&walked);
        let new_hash = tree_hash(&entries);
        report.files = entries.iter().filter(|e| e.kind == EntryKind::File).count();
        report.bytes = entries.iter().filter_map(|e| e.size).sum();

        if let Some(shared) = self.shared_groups.get(host) {
            return Err(shared.clone().into());
        }
        let owner = if self.opts.keep_owner {
            Ownership::Publisher
        } else {
            match users::resolve_ownership(self.config, host, hc)? {
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
            }
        };

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
            let staging = tempfile::Builder::new()
                .prefix(&format!("tiffin-build-{host}-"))
                .tempdir()
                .map_err(StageError::Io)?;
            let tree = staging.path().join(TREE);
            materialize(
                &build_view(&walked),
                &tree,
                Modes::Source,
                Ownership::Publisher,
                None,
            )?;
            report.expected_system = build_system(
                &self.config.build,
                &self.runner,
                &tree,
                hc.attr_or_default(host),
                mode,
            )?;
        }

        if let Some(cur) = &current {
            let same_system = self.opts.build != Some(BuildMode::Build)
                || cur.expected_system == report.expected_system;
            // A live generation not signed by the current key (unsigned before `keygen`, or
            // signed by a replaced key) is republished so that trusting agents accept it.
            let signed_right = self
                .signer
                .as_ref()
                .map_or(true, |k| k.public().verify_manifest(cur).is_ok());
            if cur.tree_hash == new_hash && same_system && signed_right {
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

        ensure_skeleton(&publication, owner)?;
        remove_stale_incoming(&publication);
        let incoming = publication.gens().join(format!(
            "{INCOMING_PREFIX}{generation}-{}",
            std::process::id()
        ));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&incoming)
            .map_err(|e| with_path(e, &incoming))?;
        let guard = DirGuard::new(incoming.clone());

        let reuse = current
            .as_ref()
            .map(|m| Reuse::new(publication.generation_dir(m.generation).join(TREE), m));
        materialize(
            &walked,
            &incoming.join(TREE),
            Modes::Publication,
            owner,
            reuse.as_ref(),
        )?;
        let mut manifest = Manifest::new(host, generation, now_rfc3339(), entries);
        manifest.expected_system = report.expected_system.clone();
        if let Some(k) = &self.signer {
            k.sign_manifest(&mut manifest);
        }
        manifest
            .validate(&format!("new manifest of {host}"))
            .map_err(|e| io::Error::other(e.to_string()))?;
        let bytes = manifest.to_bytes();
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(io::Error::other(format!(
                "the manifest of {host} would be {} bytes, more than the {MAX_MANIFEST_BYTES} agents read; split the host's tree",
                bytes.len()
            ))
            .into());
        }
        let manifest_path = incoming.join(MANIFEST_FILE);
        fsutil::atomic_write(&manifest_path, &bytes, GEN_FILE_MODE)?;
        set_owner_mode(&manifest_path, owner.tree(), GEN_FILE_MODE)?;
        set_owner_mode(&incoming, owner.tree(), GEN_DIR_MODE)?;
        sync_filesystem(&incoming)?;

        let final_dir = publication.generation_dir(generation);
        fs::rename(&incoming, &final_dir).map_err(|e| with_path(e, &final_dir))?;
        guard.keep();
        let switched = fsutil::fsync_dir(&publication.gens()).and_then(|()| {
            fsutil::atomic_symlink(
                &Publication::link_target(generation),
                &publication.current_link(),
            )
        });
        if let Err(e) = switched {
            let _ = fs::remove_dir_all(&final_dir);
            return Err(e.into());
        }
        self.prune_generations(&publication, generation);
        Ok(HostResult::Published {
            generation,
            previous: current.map(|m| m.generation),
        })
    }

    /// Keeps the newest `keep_generations`; a failure here is a warning (the new one is live).
    fn prune_generations(&self, publication: &Publication, live: u64) {
        let gens = match publication.generations() {
            Ok(g) => g,
            Err(e) => {
                push(&self.notes, &format!("cannot list old generations: {e}"));
                return;
            }
        };
        let keep = self.config.keep_generations;
        let old = gens.len().saturating_sub(keep);
        for n in gens.into_iter().take(old).filter(|&n| n != live) {
            let dir = publication.generation_dir(n);
            // Out of sight in one rename first: a run killed while deleting must not leave a
            // half-deleted `gens/<N>` behind (the next run removes the renamed rest).
            let doomed = publication
                .gens()
                .join(format!("{PRUNING_PREFIX}{n}-{}", std::process::id()));
            let removed = fs::rename(&dir, &doomed)
                .map_err(|e| with_path(e, &dir))
                .and_then(|()| fs::remove_dir_all(&doomed).map_err(|e| with_path(e, &doomed)));
            if let Err(e) = removed {
                push(
                    &self.notes,
                    &format!("cannot remove old generation {n}: {e}"),
                );
            }
        }
    }
}

fn push(m: &Mutex<Vec<String>>, s: &str) {
    if let Ok(mut v) = m.lock() {
        v.push(s.to_string());
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Walks a host's directory with the repository as the symlink boundary, refusing a tree that
/// reaches something never published (the signing key, `keys/`, `.git`, `never_publish`).
fn walk_host(
    fleet_dir: &Path,
    config: &FleetConfig,
    host: &str,
) -> Result<Vec<WalkedEntry>, StageError> {
    let src = fleet_dir.join(config.hosts[host].dir_or_default(host));
    match fs::symlink_metadata(&src) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(StageError::MissingHostDir { path: src })
        }
        Err(e) => return Err(with_path(e, &src).into()),
        Ok(_) => {}
    }
    let walked = walk_tree(&src, fleet_dir)?;
    let forbidden = super::never_publish::forbidden(fleet_dir, config);
    super::never_publish::check(&src, &walked, &forbidden)?;
    Ok(walked)
}

/// The entries Nix is given: the tree without `files/` and `files.toml`, as the agent builds it
/// (a `path:` flake is copied whole into the world-readable store).
fn build_view(walked: &[WalkedEntry]) -> Vec<WalkedEntry> {
    walked
        .iter()
        .filter(|w| !crate::agent::build::left_out_of_build(&w.entry.path))
        .cloned()
        .collect()
}

/// Stages the build view of a host's tree (without `files/` and `files.toml`) with its source
/// modes into `dest`, returning the whole walk.
pub fn stage_host(
    fleet_dir: &Path,
    config: &FleetConfig,
    host: &str,
    dest: &Path,
) -> Result<Vec<WalkedEntry>, StageError> {
    let walked = walk_host(fleet_dir, config, host)?;
    materialize(
        &build_view(&walked),
        dest,
        Modes::Source,
        Ownership::Publisher,
        None,
    )?;
    Ok(walked)
}

/// Which modes a materialised tree gets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Modes {
    /// As in the repository: a tree to build from, like the one the agent builds.
    Source,
    /// A generation: directories 0750, files 0640.
    Publication,
}

/// Files of the live generation by content, so that unchanged files are hard-linked into the new
/// generation instead of copied (generations are immutable, so sharing inodes is safe).
struct Reuse {
    tree: PathBuf,
    by_sha: HashMap<String, String>,
}

impl Reuse {
    fn new(tree: PathBuf, m: &Manifest) -> Self {
        let by_sha = m
            .files()
            .filter_map(|e| Some((e.sha256.clone()?, e.path.clone())))
            .collect();
        Self { tree, by_sha }
    }

    /// The live copy of this content, when it is exactly what the new generation needs.
    fn find(&self, sha: &str, size: u64, owner: Option<(u32, u32)>) -> Option<PathBuf> {
        let p = self.tree.join(self.by_sha.get(sha)?);
        let m = fs::symlink_metadata(&p).ok()?;
        let (uid, gid) = owner.unwrap_or((m.uid(), m.gid()));
        (m.is_file()
            && m.len() == size
            && m.mode() & 0o7777 == GEN_FILE_MODE
            && m.uid() == uid
            && m.gid() == gid)
            .then_some(p)
    }
}

/// Writes the walked tree into `dest` (which must not exist), checking every copied byte against
/// the hash the walk recorded.
fn materialize(
    walked: &[WalkedEntry],
    dest: &Path,
    modes: Modes,
    owner: Ownership,
    reuse: Option<&Reuse>,
) -> Result<(), StageError> {
    let dir_mode = |m: u32| match modes {
        Modes::Source => m | 0o700,
        Modes::Publication => GEN_DIR_MODE,
    };
    let owner_ids = owner.tree();
    make_dir(dest, dir_mode(0o755), owner_ids)?;
    for w in walked {
        let to = dest.join(&w.entry.path);
        match w.entry.kind {
            EntryKind::Dir => make_dir(&to, dir_mode(w.entry.mode), owner_ids)?,
            EntryKind::File => {
                let sha = w.entry.sha256.as_deref().unwrap_or_default();
                let size = w.entry.size.unwrap_or(0);
                let linked = modes == Modes::Publication
                    && reuse
                        .and_then(|r| r.find(sha, size, owner_ids))
                        .is_some_and(|from| fs::hard_link(from, &to).is_ok());
                if !linked {
                    let mode = match modes {
                        Modes::Source => w.entry.mode,
                        Modes::Publication => GEN_FILE_MODE,
                    };
                    copy_verified(&w.source, &to, sha, size, mode, owner_ids)?;
                }
            }
        }
    }
    Ok(())
}

fn make_dir(p: &Path, mode: u32, owner: Option<(u32, u32)>) -> io::Result<()> {
    fs::DirBuilder::new()
        .mode(mode)
        .create(p)
        .map_err(|e| with_path(e, p))?;
    set_owner_mode(p, owner, mode)
}

/// Copies `from` to a new file `to`, hashing on the way; a mismatch with the walk is an error.
fn copy_verified(
    from: &Path,
    to: &Path,
    sha: &str,
    size: u64,
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<(), StageError> {
    let mut src = File::open(from).map_err(|e| with_path(e, from))?;
    let mut dst = fsutil::create_new(to, mode)?;
    // Explicitly: the umask may have taken bits off the mode given at creation.
    dst.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| with_path(e, to))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&dst, Some(uid), Some(gid)).map_err(|e| with_path(e, to))?;
    }
    let mut hasher = hash::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        let k = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(with_path(e, from).into()),
        };
        hasher.update(&buf[..k]);
        dst.write_all(&buf[..k]).map_err(|e| with_path(e, to))?;
        n += k as u64;
    }
    if n != size || hasher.finish() != sha {
        return Err(StageError::Changed {
            path: from.to_path_buf(),
        });
    }
    Ok(())
}

/// Sets owner (when given) and mode, touching nothing that is already right.
pub(super) fn set_owner_mode(p: &Path, owner: Option<(u32, u32)>, mode: u32) -> io::Result<()> {
    let m = fs::symlink_metadata(p).map_err(|e| with_path(e, p))?;
    if let Some((uid, gid)) = owner {
        if m.uid() != uid || m.gid() != gid {
            std::os::unix::fs::lchown(p, Some(uid), Some(gid)).map_err(|e| with_path(e, p))?;
        }
    }
    if m.mode() & 0o7777 != mode {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).map_err(|e| with_path(e, p))?;
    }
    Ok(())
}

/// `<chroot>/<host>/` root 0755, `gens/` root 0755, `logs/` the host's user 0700; created when
/// missing and corrected when wrong, untouched when right.
fn ensure_skeleton(p: &Publication, owner: Ownership) -> io::Result<()> {
    for (dir, ids, mode) in [
        (p.dir.clone(), owner.root(), HOST_DIR_MODE),
        (p.gens(), owner.root(), HOST_DIR_MODE),
        (p.logs(), owner.logs(), LOGS_MODE),
    ] {
        match fs::DirBuilder::new().mode(mode).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(with_path(e, &dir)),
        }
        set_owner_mode(&dir, ids, mode)?;
    }
    Ok(())
}

/// Generations a crashed run left half-written or half-deleted, and the temporary link it was
/// about to rename over `current` (we hold the lock, so none is in progress).
fn remove_stale_incoming(p: &Publication) {
    if let Ok(rd) = fs::read_dir(p.gens()) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(INCOMING_PREFIX) || name.starts_with(PRUNING_PREFIX) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    // `fsutil::atomic_symlink` names it `.current.<pid>.tmp`.
    if let Ok(rd) = fs::read_dir(&p.dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_link = e.file_type().is_ok_and(|t| t.is_symlink());
            if is_link && name.starts_with(".current.") && name.ends_with(".tmp") {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// Makes everything written on the generation's filesystem durable with one syncfs(2), instead of
/// one fsync per file: a 300-file generation costs one flush.
fn sync_filesystem(dir: &Path) -> io::Result<()> {
    let f = File::open(dir).map_err(|e| with_path(e, dir))?;
    // SAFETY: syncfs only reads the descriptor, which `f` keeps open for the call.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(with_path(io::Error::last_os_error(), dir));
    }
    Ok(())
}
