//! Staged rollouts (`fleet publish --staged`, `fleet rollout`): a *release* (one id across the
//! hosts, derived from the repository's content) goes to wave 0 first, then to each next wave
//! once every host of the waves that have it runs it and the soak time has passed. A host that
//! rolls it back, fails it or is interrupted applying it halts the rollout and quarantines the
//! release: no later wave gets it, and `publish --staged` of the same content is refused until
//! `fleet rollout --clear`.
//!
//! `state` keeps the rollout in `<chroot>/.tiffin-rollout.json` (no host can read it), `judge`
//! reads what the hosts reported, `release` names the repository's content; this file decides.

mod judge;
mod release;
mod state;
mod waves;

pub use judge::{judge, Verdict};
pub use release::release_id;
pub use state::{Halt, Quarantine, Release, RolloutState, STATE_FILE};
pub use waves::waves_of;

use crate::config::FleetConfig;
use crate::fleet::publish::{publish, PublishError, PublishOptions, PublishReport};
use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

const LOCK_FILE: &str = ".tiffin-rollout.lock";

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("release {id} is quarantined: {why}; change the configuration, or clear it with `tiffin fleet rollout --clear`")]
    Quarantined { id: String, why: String },
    #[error("the repository changed since release {staged} was staged (its content is now release {now}): publish it with `tiffin fleet publish --staged` first")]
    RepositoryChanged { staged: String, now: String },
    #[error("release {id}: not published to host(s) {hosts}; wave {wave} stays where it was")]
    PublishFailed {
        id: String,
        wave: u32,
        hosts: String,
    },
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Release(String),
}

/// What one `fleet rollout` (or one look by `fleet watch`) did.
#[derive(Clone, Debug)]
pub enum Step {
    /// Nothing staged.
    NoRollout,
    /// Every wave has it.
    Complete { id: String },
    /// Halted; `new` when this look found the failure.
    Halted { id: String, halt: Halt, new: bool },
    /// Hosts still to report it, or the soak still running (seconds left).
    Waiting {
        id: String,
        wave: u32,
        hosts: Vec<(String, String)>,
        unseen: Vec<String>,
        soak_left: u64,
    },
    /// The release was published to `wave`.
    Promoted {
        id: String,
        wave: u32,
        unseen: Vec<String>,
        report: PublishReport,
    },
}

/// `fleet publish --staged`: publishes the repository's content as a release to the first
/// wave's hosts, refused while that release is quarantined.
pub fn stage(
    fleet_dir: &Path,
    config: &FleetConfig,
    opts: &PublishOptions,
    now: u64,
) -> Result<(Release, PublishReport), RolloutError> {
    let _lock = lock(config)?;
    let mut st = RolloutState::load(&config.chroot)?;
    let id = release_id(fleet_dir, config)?;
    if let Some(q) = st.quarantine_of(&id) {
        return Err(quarantined(q));
    }
    let waves = waves_of(config);
    let mut all: Vec<u32> = waves.values().copied().collect();
    all.sort_unstable();
    all.dedup();
    let first = all.first().copied().unwrap_or(0);
    let mut release = Release {
        id: id.clone(),
        staged_at: now,
        wave: first,
        wave_since: now,
        waves: all.clone(),
        generations: Default::default(),
        complete: all.len() <= 1,
        halted: None,
    };
    let report = publish_wave(fleet_dir, config, opts, &mut release, first)?;
    if !opts.dry_run {
        st.release = Some(release.clone());
        st.save(&config.chroot)?;
    }
    Ok((release, report))
}

/// `fleet rollout`: halts on a broken host, else promotes the release to the next wave when
/// the waves that have it run it and `soak` (fleet.toml's when `None`) has passed.
pub fn advance(
    fleet_dir: &Path,
    config: &FleetConfig,
    opts: &PublishOptions,
    soak: Option<Duration>,
    now: u64,
) -> Result<Step, RolloutError> {
    let _lock = lock(config)?;
    let mut st = RolloutState::load(&config.chroot)?;
    let Some(mut release) = st.release.clone() else {
        return Ok(Step::NoRollout);
    };
    let id = release.id.clone();
    if let Some(halt) = release.halted.clone() {
        return Ok(Step::Halted {
            id,
            halt,
            new: false,
        });
    }
    let unseen = match judge(&config.chroot, &release, &config.rollout, now) {
        Verdict::Halt(halt) => return halt_and_quarantine(config, st, release, halt),
        _ if release.complete => return Ok(Step::Complete { id }),
        Verdict::Waiting { hosts, unseen } => {
            return Ok(Step::Waiting {
                id,
                wave: release.wave,
                hosts,
                unseen,
                soak_left: 0,
            })
        }
        Verdict::Done { unseen } => unseen,
    };
    let soak = soak.unwrap_or(config.rollout.soak).as_secs();
    let soaked = now.saturating_sub(release.wave_since);
    if soaked < soak {
        return Ok(Step::Waiting {
            id,
            wave: release.wave,
            hosts: Vec::new(),
            unseen,
            soak_left: soak - soaked,
        });
    }
    let now_id = release_id(fleet_dir, config)?;
    if now_id != id {
        return Err(RolloutError::RepositoryChanged {
            staged: id,
            now: now_id,
        });
    }
    let Some(&next) = release.waves.iter().find(|w| **w > release.wave) else {
        release.complete = true;
        st.release = Some(release);
        st.save(&config.chroot)?;
        return Ok(Step::Complete { id });
    };
    let report = publish_wave(fleet_dir, config, opts, &mut release, next)?;
    release.wave = next;
    release.wave_since = now;
    release.complete = release.waves.last() == Some(&next);
    if !opts.dry_run {
        st.release = Some(release);
        st.save(&config.chroot)?;
    }
    Ok(Step::Promoted {
        id,
        wave: next,
        unseen,
        report,
    })
}

/// Marks the release halted and quarantines it.
fn halt_and_quarantine(
    config: &FleetConfig,
    mut st: RolloutState,
    mut release: Release,
    halt: Halt,
) -> Result<Step, RolloutError> {
    let id = release.id.clone();
    release.halted = Some(halt.clone());
    st.quarantined.retain(|q| q.release != id);
    st.quarantined.push(Quarantine {
        release: id.clone(),
        halt: halt.clone(),
    });
    st.release = Some(release);
    st.save(&config.chroot)?;
    Ok(Step::Halted {
        id,
        halt,
        new: true,
    })
}

/// `fleet rollout --clear`: lifts every quarantine and ends a halted rollout. The releases it
/// lifted.
pub fn clear(config: &FleetConfig) -> Result<Vec<String>, RolloutError> {
    let _lock = lock(config)?;
    let mut st = RolloutState::load(&config.chroot)?;
    let lifted: Vec<String> = st.quarantined.drain(..).map(|q| q.release).collect();
    if st.release.as_ref().is_some_and(|r| r.halted.is_some()) {
        st.release = None;
    }
    st.save(&config.chroot)?;
    Ok(lifted)
}

/// Publishes the release to the hosts of `wave`, recording each host's generation.
fn publish_wave(
    fleet_dir: &Path,
    config: &FleetConfig,
    opts: &PublishOptions,
    release: &mut Release,
    wave: u32,
) -> Result<PublishReport, RolloutError> {
    let hosts: Vec<String> = waves_of(config)
        .into_iter()
        .filter(|(_, w)| *w == wave)
        .map(|(h, _)| h)
        .collect();
    let opts = PublishOptions {
        hosts: hosts.clone(),
        release: Some(release.id.clone()),
        prune: false,
        ..opts.clone()
    };
    let report = publish(fleet_dir, config, &opts)?;
    let failed: Vec<&str> = report
        .hosts
        .iter()
        .filter(|h| h.failed())
        .map(|h| h.host.as_str())
        .collect();
    if !failed.is_empty() {
        return Err(RolloutError::PublishFailed {
            id: release.id.clone(),
            wave,
            hosts: failed.join(", "),
        });
    }
    for h in &report.hosts {
        if let Some(g) = h.generation() {
            release.generations.insert(h.host.clone(), g);
        }
    }
    Ok(report)
}

fn quarantined(q: &Quarantine) -> RolloutError {
    let h = &q.halt;
    let step = h.step.as_deref().map(|s| format!(" at {s}"));
    let message = h
        .message
        .as_deref()
        .map(|m| format!(": {}", crate::fleet::inert::first_line(m, 80)));
    RolloutError::Quarantined {
        id: q.release.clone(),
        why: format!(
            "host {} {}{} (g{}){}",
            h.host,
            h.outcome.replace('_', " "),
            step.unwrap_or_default(),
            h.generation,
            message.unwrap_or_default()
        ),
    }
}

/// One rollout at a time per chroot root (`fleet rollout`, `fleet watch`, `publish --staged`).
fn lock(config: &FleetConfig) -> Result<nix::fcntl::Flock<fs::File>, RolloutError> {
    let path = config.chroot.join(LOCK_FILE);
    fs::create_dir_all(&config.chroot).map_err(|e| crate::fsutil::with_path(e, &config.chroot))?;
    // Opened for reading once it exists: closing a file opened for writing is an inotify event
    // in the chroot, which would wake `fleet watch` into its next look, and that into the next.
    let file = match fs::File::open(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path),
        r => r,
    }
    .map_err(|e| crate::fsutil::with_path(e, &path))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| crate::fsutil::with_path(e.into(), &path).into())
}

/// The one line `fleet status` prints above its table, when a release was staged.
pub fn summary_line(st: &RolloutState, now: u64) -> Option<String> {
    let r = st.release.as_ref()?;
    let waves = r
        .waves
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut line = format!(
        "rollout {}: wave {} of {waves} reached {} ago",
        r.id,
        r.wave,
        crate::timefmt::compact(now.saturating_sub(r.wave_since))
    );
    match (&r.halted, r.complete) {
        (Some(h), _) => {
            let step = h
                .step
                .as_deref()
                .map(|s| format!(" at {s}"))
                .unwrap_or_default();
            let msg = h
                .message
                .as_deref()
                .map(|m| format!(": {}", crate::fleet::inert::first_line(m, 60)))
                .unwrap_or_default();
            line.push_str(&format!(
                "; HALTED: {} {}{step} (g{}){msg}",
                crate::fleet::inert::first_line(&h.host, 40),
                h.outcome.replace('_', " "),
                h.generation
            ));
        }
        (None, true) => line.push_str("; complete"),
        (None, false) => line.push_str("; not halted"),
    }
    if !st.quarantined.is_empty() {
        line.push_str(&format!("; {} quarantined", st.quarantined.len()));
    }
    Some(line)
}
