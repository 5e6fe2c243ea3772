//! Which icon the tray shows, and the headline that names the state in words (the first menu
//! line and the tooltip's start).

use crate::status::{AgentStatus, CheckResult, Outcome, Phase};
use crate::tray::i18n::{tr, tr_args};

/// The states with a distinct icon (docs/tray.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IconKind {
    UpToDate,
    UpdateAvailable,
    /// A cycle that changes the machine is running; the download's percentage when known.
    Updating(Option<u8>),
    Failed,
    RolledBack,
    RebootNeeded,
    AgentUnreachable,
    ServerUnreachable,
}

impl IconKind {
    /// The icon's file name stem in `assets/` (`assets/<stem>.svg`, `assets/png/<size>/<stem>.png`).
    pub fn asset_stem(self) -> &'static str {
        match self {
            IconKind::UpToDate => "tiffin-up-to-date",
            IconKind::UpdateAvailable => "tiffin-update-available",
            IconKind::Updating(_) => "tiffin-updating",
            IconKind::Failed => "tiffin-failed",
            IconKind::RolledBack => "tiffin-rolled-back",
            IconKind::RebootNeeded => "tiffin-reboot-needed",
            IconKind::AgentUnreachable => "tiffin-agent-unreachable",
            IconKind::ServerUnreachable => "tiffin-server-unreachable",
        }
    }

    /// One of each icon, for tests and asset checks.
    pub const ALL: [IconKind; 8] = [
        IconKind::UpToDate,
        IconKind::UpdateAvailable,
        IconKind::Updating(None),
        IconKind::Failed,
        IconKind::RolledBack,
        IconKind::RebootNeeded,
        IconKind::AgentUnreachable,
        IconKind::ServerUnreachable,
    ];
}

/// The icon for a status; `None` means the agent cannot be reached.
pub fn icon(status: Option<&AgentStatus>) -> IconKind {
    let Some(s) = status else {
        return IconKind::AgentUnreachable;
    };
    if s.phase.is_busy() {
        return IconKind::Updating(progress_percent(s));
    }
    match s.last_update.as_ref().map(|u| u.outcome) {
        Some(Outcome::RolledBack) => return IconKind::RolledBack,
        Some(Outcome::Failed | Outcome::Interrupted) => return IconKind::Failed,
        _ => {}
    }
    if s.reboot_needed {
        return IconKind::RebootNeeded;
    }
    if server_unreachable(s) {
        return IconKind::ServerUnreachable;
    }
    if pending_generation(s).is_some() {
        return IconKind::UpdateAvailable;
    }
    if s.last_check.as_ref().map(|c| c.result) == Some(CheckResult::Failed) {
        return IconKind::Failed;
    }
    IconKind::UpToDate
}

pub(super) fn server_unreachable(s: &AgentStatus) -> bool {
    s.server_reachable == Some(false)
        || s.last_check.as_ref().map(|c| c.result) == Some(CheckResult::Unreachable)
}

/// A generation on the server that is newer than the applied one.
pub(super) fn pending_generation(s: &AgentStatus) -> Option<u64> {
    let g = s.available_generation?;
    match s.applied_generation {
        Some(applied) if applied >= g => None,
        _ => Some(g),
    }
}

/// A pending generation while the agent is not busy: waiting for the user. (During a check the
/// agent may already download it; it is announced once that is over.)
pub(super) fn waiting_generation(s: &AgentStatus) -> Option<u64> {
    pending_generation(s).filter(|_| !s.phase.is_busy())
}

pub(super) fn progress_percent(s: &AgentStatus) -> Option<u8> {
    if s.phase != Phase::Downloading {
        return None;
    }
    if let Some(c) = s.cache_download {
        // A prebuilt system from the host's cache: by bytes, else by paths.
        let (done, total) = if c.total_bytes > 0 {
            (c.done_bytes, c.total_bytes)
        } else {
            (c.done_paths, c.total_paths)
        };
        return (total > 0).then(|| (done.min(total) * 100 / total) as u8);
    }
    let p = s.progress?;
    let (done, total) = if p.total_bytes > 0 {
        (p.done_bytes, p.total_bytes)
    } else {
        (p.done_files, p.total_files)
    };
    (total > 0).then(|| (done.min(total) * 100 / total) as u8)
}

/// The first status line and the heart of the tooltip.
pub(super) fn headline(s: Option<&AgentStatus>, icon: IconKind) -> String {
    let Some(s) = s else {
        return tr("agent-not-reachable");
    };
    match icon {
        IconKind::UpToDate => tr("up-to-date"),
        IconKind::UpdateAvailable => match pending_generation(s) {
            Some(g) => tr_args("update-available-generation", &[("g", g.into())]),
            None => tr("update-available"),
        },
        IconKind::Updating(_) => updating_line(s),
        IconKind::Failed => match &s.last_update {
            Some(u) if matches!(u.outcome, Outcome::Failed | Outcome::Interrupted) => {
                let g = ("g", u.generation.into());
                match (u.outcome, &u.failed_step) {
                    (Outcome::Interrupted, _) => tr_args("update-interrupted", &[g]),
                    (_, Some(step)) => {
                        tr_args("update-failed-at", &[g, ("step", step.name().into())])
                    }
                    _ => tr_args("update-failed", &[g]),
                }
            }
            _ => tr("checking-failed"),
        },
        IconKind::RolledBack => tr("rolled-back"),
        IconKind::RebootNeeded => tr("restart-needed"),
        IconKind::ServerUnreachable => tr("server-not-reachable"),
        IconKind::AgentUnreachable => tr("agent-not-reachable"),
    }
}

pub(super) fn updating_line(s: &AgentStatus) -> String {
    let step = tr(match s.phase {
        Phase::Downloading => "step-downloading",
        Phase::Building => "step-building",
        Phase::Activating => "step-activating",
        Phase::Verifying => "step-verifying",
        Phase::Committing => "step-committing",
        Phase::RollingBack => "step-rolling-back",
        Phase::Idle | Phase::Checking => "step-starting",
    });
    let mut line = match s.available_generation {
        Some(g) => tr_args("updating-to", &[("g", g.into()), ("step", step.into())]),
        None => tr_args("updating", &[("step", step.into())]),
    };
    if let (Phase::Downloading, Some(c)) = (s.phase, s.cache_download) {
        // A prebuilt system from the host's binary cache.
        let paths = tr_args(
            "download-paths",
            &[
                ("done", c.done_paths.into()),
                ("total", c.total_paths.into()),
            ],
        );
        line.push_str(&format!(" {paths}"));
        if let Some(pc) = progress_percent(s) {
            line.push_str(&format!(" ({pc}%)"));
        }
        return line;
    }
    if let (Phase::Downloading, Some(p)) = (s.phase, s.progress) {
        if p.total_files > 0 {
            line.push(' ');
            line.push_str(&tr_args(
                "download-files",
                &[
                    ("done", p.done_files.into()),
                    ("total", p.total_files.into()),
                ],
            ));
        }
        if let Some(pc) = progress_percent(s) {
            line.push_str(&format!(" ({pc}%)"));
        }
    }
    line
}
