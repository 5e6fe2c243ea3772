//! Where a release stands on the hosts that have it: a host that rolled it back, failed it or
//! was interrupted applying it halts the rollout; the wave is done when every host runs it (or
//! was not seen within the grace period and `wait_for_unseen` is off).

use super::state::{Halt, Release};
use crate::config::rollout::RolloutConfig;
use crate::fleet::status::{assess, HostRecords};
use crate::publication::report::outcome_word;
use crate::status::Outcome;
use std::path::Path;

/// What the hosts that have the release say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A host broke on the release.
    Halt(Halt),
    /// Every host that has it runs it; `unseen` were not seen within the grace period (and do
    /// not block).
    Done { unseen: Vec<String> },
    /// Hosts still to report it: `(host, why)`.
    Waiting {
        hosts: Vec<(String, String)>,
        unseen: Vec<String>,
    },
}

/// Looks at every host that has the release, as of `now` (Unix seconds).
pub fn judge(chroot: &Path, release: &Release, cfg: &RolloutConfig, now: u64) -> Verdict {
    let mut waiting = Vec::new();
    let mut unseen = Vec::new();
    for (host, &g) in &release.generations {
        let rec = HostRecords::read(chroot, host);
        if let Some(h) = broke_on(&rec, g, now) {
            return Verdict::Halt(h);
        }
        let st = assess(&rec, true, now);
        if st.running_generation.is_some_and(|r| r >= g) {
            continue;
        }
        let contact = rec
            .seen_at()
            .max(rec.reports.last().map(|r| r.time))
            .filter(|t| now.saturating_sub(*t) <= cfg.grace.as_secs());
        if contact.is_none() {
            unseen.push(host.clone());
            if !cfg.wait_for_unseen {
                continue;
            }
        }
        let runs = st
            .running_generation
            .map_or_else(|| "nothing known".to_string(), |r| format!("g{r}"));
        waiting.push((host.clone(), format!("runs {runs}, the release is g{g}")));
    }
    if waiting.is_empty() {
        Verdict::Done { unseen }
    } else {
        Verdict::Waiting {
            hosts: waiting,
            unseen,
        }
    }
}

/// The host's first report of failure for generation `g`, as a halt.
fn broke_on(rec: &HostRecords, g: u64, now: u64) -> Option<Halt> {
    let bad = rec.reports.iter().find(|r| {
        r.generation == g
            && matches!(
                r.outcome,
                Outcome::Failed | Outcome::RolledBack | Outcome::Interrupted
            )
    })?;
    let full = rec.load_report(bad).ok();
    Some(Halt {
        host: rec.host.clone(),
        generation: g,
        outcome: outcome_word(bad.outcome),
        step: full
            .as_ref()
            .and_then(|r| r.failed_step)
            .map(|s| s.to_string()),
        message: full.and_then(|r| r.message),
        at: now,
    })
}
