//! `tiffin fleet publish`: each host's directory, symlinks resolved, becomes a new immutable
//! generation under `<chroot>/<host>/gens/<N>` when its content changed; `current` then switches
//! to it in one rename (docs/publication.md, §7).
//!
//! A generation is written as `gens/.incoming-<N>-<pid>/`, made durable, renamed to `gens/<N>`
//! and only then linked from `current`, so a reader following `current` never sees a partial
//! tree. Any failure removes the incoming directory and leaves `current` where it was.
//!
//! This file decides, per host, what a run does (unchanged, would publish, publish) and runs the
//! hosts in parallel; `root` prepares and locks the chroot root, `stage` walks and copies a
//! host's tree, `generation` writes a generation and switches `current`, `prune` deletes old
//! generations and orphaned publications; `outcome` holds the options, reports, errors and modes
//! they share. The parts import `outcome` and each other, never this file.

mod cache;
mod changes;
mod generation;
mod outcome;
mod prune;
mod root;
mod seal;
mod stage;
mod web;

pub(crate) use outcome::GEN_FILE_MODE;
use outcome::{push, HostError};
pub use outcome::{
    HostReport, HostResult, Orphan, PublishError, PublishOptions, PublishReport, StageError,
};
pub(crate) use stage::set_owner_mode;
pub use stage::{host_tree_hash, stage_host};

use super::nix_build::{build_system, BuildMode};
use super::signing::{load_signing_key, resign, signature_is_stale};
use super::users::{self, Ownership, UserCheck};
use crate::config::FleetConfig;
use crate::fleet::seal_state::{HostSeal, SealState};
use crate::manifest::Sealed;
use crate::manifest::{entries_of, tree_hash, EntryKind, Manifest, WalkedEntry};
use crate::publication::{Publication, TREE};
use crate::runner::Runner;
use crate::sign::SecretKey;
use generation::{ensure_skeleton, NewGeneration};
use seal::SealedTree;
use stage::{build_view, materialize, walk_host, Modes};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
    let prebuilt;
    let opts = if opts.build.is_none() && config.build.prebuild {
        prebuilt = PublishOptions {
            build: Some(BuildMode::Build),
            ..opts.clone()
        };
        &prebuilt
    } else {
        opts
    };
    let mut report = PublishReport::default();
    let signer = load_signing_key(fleet_dir, config, opts, &mut report.warnings)?;
    let _lock = root::prepare_chroot_root(config, opts, &mut report.warnings)?;
    let mut ctx = RunContext::new(fleet_dir, config, opts);
    ctx.signer = signer;
    if config.secrets.seal {
        ctx.seal_state = Some(SealState::load(fleet_dir, &mut report.warnings));
    }
    if users::is_root() && !opts.keep_owner {
        ctx.shared_groups = users::shared_primary_groups(config);
    }
    report.hosts = in_parallel(&hosts, opts.jobs, |host| {
        let r = ctx.publish_host(host);
        on_done(&r);
        r
    });
    if ctx.pool.used.load(Ordering::SeqCst) {
        ctx.pool.prune();
    }
    report.warnings.extend(ctx.warnings());
    report.warnings.extend(ctx.save_seal_state());
    if !opts.dry_run {
        report.warnings.extend(web::update(config, &report.hosts));
    }
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
    /// The binary cache pool the generations' `cache/` link into.
    pool: cache::CachePool,
    /// `[secrets] seal = true`: what the last runs sealed (`fleet::seal_state`).
    seal_state: Option<SealState>,
    /// What this run's live generations hold sealed, per host, to be recorded at the end.
    sealed_now: Mutex<BTreeMap<String, HostSeal>>,
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
            pool: cache::CachePool::new(&config.chroot),
            seal_state: None,
            sealed_now: Mutex::default(),
        }
    }

    /// Records what this run sealed (not with `--dry-run`); a warning when that fails.
    fn save_seal_state(&self) -> Option<String> {
        let mut state = self.seal_state.clone()?;
        let now = std::mem::take(&mut *self.sealed_now.lock().ok()?);
        if self.opts.dry_run || now.is_empty() {
            return None;
        }
        state.hosts.extend(now);
        if Some(&state) == self.seal_state.as_ref() {
            return None;
        }
        state.save(self.fleet_dir).err().map(|e| {
            format!(
                "{e}: the record of sealed files was not saved; the next publish seals them afresh"
            )
        })
    }

    /// The host's tree with its secrets sealed, when the fleet seals.
    fn seal(
        &self,
        host: &str,
        walked: Vec<WalkedEntry>,
        publication: &Publication,
        current: Option<&Manifest>,
    ) -> Result<(Vec<WalkedEntry>, Option<SealedTree>), HostError> {
        let Some(state) = &self.seal_state else {
            return Ok((walked, None));
        };
        let hc = &self.config.hosts[host];
        let to = crate::seal::Recipients::new(&hc.key, &self.config.secrets.recipients).map_err(
            |why| StageError::Seal {
                path: self.fleet_dir.join(crate::config::fleet::FLEET_FILE),
                why: format!("host {host}: {why}"),
            },
        )?;
        let live = current.map(|m| seal::Live {
            tree: publication.generation_dir(m.generation).join(TREE),
            manifest: m,
        });
        let sealed = seal::seal_tree(walked, &to, state.hosts.get(host), live)?;
        Ok((sealed.walked.clone(), Some(sealed)))
    }

    /// Remembers what `host`'s live generation holds sealed.
    fn sealed_live(&self, host: &str, sealed: Option<SealedTree>) {
        if let (Some(s), Ok(mut now)) = (sealed, self.sealed_now.lock()) {
            now.insert(host.to_string(), s.record);
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
            cache: None,
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
        if let Some(shared) = self.shared_groups.get(host) {
            return Err(shared.clone().into());
        }
        let owner = self.owner_of(host)?;
        let publication = Publication::new(&self.config.chroot, host);
        let current = self.live_manifest(host, &publication);
        let (walked, sealed) = self.seal(host, walked, &publication, current.as_ref())?;
        let sealed_info = sealed.as_ref().and_then(|s| s.info.clone());
        let entries = entries_of(&walked);
        let new_hash = tree_hash(&entries);
        report.files = entries.iter().filter(|e| e.kind == EntryKind::File).count();
        report.bytes = entries.iter().filter_map(|e| e.size).sum();
        if let Some(mode) = self.opts.build {
            report.expected_system = self.build_first(host, &walked, mode)?;
        }
        let cache = self.export_cache(&report.expected_system)?;
        report.cache = cache.as_ref().map(|c| (c.paths.len(), c.total_bytes()));
        if let Some(cur) = &current {
            let same_cache = cache.is_none() || cur.cache == cache;
            if same_cache
                && self.is_unchanged(cur, &new_hash, &report.expected_system, &sealed_info)
            {
                if !self.opts.dry_run {
                    ensure_skeleton(&publication, owner)?;
                    generation::ensure_current_txt(&publication, cur.generation, owner)?;
                    if let Some(k) = self.signer.as_ref().filter(|_| signature_is_stale(cur)) {
                        resign(&publication, cur, k, owner)?;
                    }
                }
                self.sealed_live(host, sealed);
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
            note: self.opts.note.clone(),
            changes: changes::closure_changes(
                &self.config.build,
                &self.runner,
                host,
                current.as_ref(),
                report.expected_system.as_deref(),
                &|n| push(&self.notes, &n),
            ),
            signer: self.signer.as_ref(),
            owner,
            cache: cache.map(|index| (index, &self.pool)),
            sealed: sealed_info.clone(),
            release: self.opts.release.clone(),
        };
        generation::write_and_switch(&publication, new, current.as_ref())?;
        self.sealed_live(host, sealed);
        let keep = self.config.keep_generations;
        prune::prune_generations(&publication, generation, keep, &self.notes);
        if sealed_info.is_some() {
            prune::prune_unsealed(&publication, generation, &self.notes);
        }
        Ok(HostResult::Published {
            generation,
            previous: current.map(|m| m.generation),
        })
    }

    /// The live generation's manifest; an unreadable one is noted and treated as none.
    fn live_manifest(&self, host: &str, publication: &Publication) -> Option<Manifest> {
        publication.current_manifest().unwrap_or_else(|e| {
            push(
                &self.notes,
                &format!(
                    "host {host}: the live generation is unreadable ({e}); publishing a new one"
                ),
            );
            None
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

    /// On a real build (not a dry run) with `[build] cache`: the closure of the built system
    /// exported into the pool, as the index the manifest lists.
    fn export_cache(
        &self,
        system: &Option<String>,
    ) -> Result<Option<crate::manifest::cache::CacheIndex>, HostError> {
        let wanted = self.opts.build == Some(BuildMode::Build)
            && self.config.build.cache
            && !self.opts.dry_run;
        match system {
            Some(s) if wanted => Ok(Some(self.pool.export(
                &self.config.build,
                &self.runner,
                s,
            )?)),
            _ => Ok(None),
        }
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
    fn is_unchanged(
        &self,
        cur: &Manifest,
        new_hash: &str,
        system: &Option<String>,
        sealed: &Option<Sealed>,
    ) -> bool {
        let same_system =
            self.opts.build != Some(BuildMode::Build) || cur.expected_system == *system;
        let signed_right = self
            .signer
            .as_ref()
            .map_or(true, |k| k.public().verify_manifest(cur).is_ok());
        cur.tree_hash == new_hash && same_system && signed_right && cur.sealed == *sealed
    }
}
