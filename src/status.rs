//! The agent's status: the single source of truth for every UI (docs/protocol.md).
//!
//! Plain data with serde derives; the wire encoding around it lives in `ipc`. Times are Unix
//! seconds (UTC) so that every UI can say "10 min ago" against its own clock.

use serde::{Deserialize, Serialize};

/// Where the agent's pipeline is (docs/agent.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    #[default]
    Idle,
    Checking,
    Downloading,
    Building,
    Activating,
    Verifying,
    Committing,
    RollingBack,
}

impl Phase {
    /// True while a cycle that changes the machine is under way.
    pub fn is_busy(self) -> bool {
        !matches!(self, Phase::Idle | Phase::Checking)
    }
}

/// When a new generation is applied (docs/agent.md, policy per host).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    #[default]
    Auto,
    Notify,
}

/// How a cycle ended; the same words go into reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    UpToDate,
    Updated,
    Failed,
    RolledBack,
    /// The agent was stopped in the middle of a cycle; found at the next start.
    Interrupted,
}

/// A step of a cycle, as written in the agent's journal, the reports and `failed_step` (the
/// wire and report JSON carry [`Step::name`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Fetch,
    Build,
    Files,
    Activate,
    Verify,
    Commit,
    RollBack,
    /// Not a pipeline step: the agent itself failed (its cycle panicked).
    Agent,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Fetch => "fetch",
            Step::Build => "build",
            Step::Files => "files",
            Step::Activate => "activate",
            Step::Verify => "verify",
            Step::Commit => "commit",
            Step::RollBack => "roll_back",
            Step::Agent => "agent",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The result of the last check against the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckResult {
    UpToDate,
    UpdateAvailable,
    Unreachable,
    Failed,
}

/// What the agent says about the publications it fetches, when something is wrong with their
/// trust (SECURITY.md "Signed publications").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PublicationNote {
    /// `allow_unsigned = true` on an sftp:// source: nothing the server sends is verified.
    Unsigned,
    /// `max_age`: the publication was signed longer ago than that (a frozen server?).
    TooOld,
}

impl PublicationNote {
    /// The words every UI and report uses.
    pub fn label(self) -> &'static str {
        match self {
            PublicationNote::Unsigned => "unsigned",
            PublicationNote::TooOld => "publication too old",
        }
    }
}

/// Download progress while in [`Phase::Downloading`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub done_files: u64,
    pub total_files: u64,
    pub done_bytes: u64,
    pub total_bytes: u64,
}

/// Download progress from the host's binary cache (`build = "auto"|"prebuilt"`): the store
/// paths the machine lacked and the bytes of their narinfos and NARs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheProgress {
    pub done_paths: u64,
    pub total_paths: u64,
    pub done_bytes: u64,
    pub total_bytes: u64,
}

/// Where a cycle's system came from: built on the machine, or imported from the host's binary
/// cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuiltBy {
    Local,
    Cache,
}

impl BuiltBy {
    /// The word reports and `fleet status` show.
    pub fn name(self) -> &'static str {
        match self {
            BuiltBy::Local => "built locally",
            BuiltBy::Cache => "from cache",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastCheck {
    pub at: u64,
    pub result: CheckResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastUpdate {
    pub at: u64,
    pub generation: u64,
    pub outcome: Outcome,
    /// The step that failed (`build`, `activate`, …) when the outcome is not a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<Step>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackInfo {
    pub at: u64,
    /// The generation whose activation was rolled back.
    pub generation: u64,
    pub from_system: String,
    pub to_system: String,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackState {
    /// A previous system exists to roll back to.
    pub previous_available: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<RollbackInfo>,
}

/// Everything a UI shows about the agent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub host: String,
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_generation: Option<u64>,
    /// When the applied generation was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<u64>,
    /// A newer generation found on the server and not applied yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_generation: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check: Option<LastCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update: Option<LastUpdate>,
    pub rollback: RollbackState,
    pub reboot_needed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_check: Option<u64>,
    pub policy: Policy,
    /// Notify policy: when the available generation is applied anyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<u64>,
    /// None until the first contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_reachable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_system: Option<String>,
    /// The group whose members (and root) may roll back; UIs use it to enable the action.
    #[serde(default)]
    pub admin_group: String,
    /// Set while the HTTP trigger is not listening (its port is taken): why, and when it is
    /// tried again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_trigger_error: Option<String>,
    /// "unsigned" or "publication too old", as of the last check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publication: Option<PublicationNote>,
    /// The machine's backups, when agent.toml has `[backup]` (docs/backup.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<crate::backup::BackupStatus>,
    /// While a prebuilt system is downloaded from the host's binary cache: paths and bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_download: Option<CacheProgress>,
    /// The admin's change note of the available generation (`fleet publish -m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_note: Option<String>,
    /// The change note of the applied generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_note: Option<String>,
    /// Policy `notify`: the user postponed an available update (`tiffin postpone`, the tray's
    /// "Later"); UIs do not remind them of that generation before `until`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postponed: Option<Postponed>,
    /// Automatic updates wait for these to clear (a click or `tiffin update` does not).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_for: Vec<Waiting>,
    /// What the available generation changes (its manifest's closure-diff summary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_changes: Option<crate::manifest::Changes>,
    /// `auto_reboot`: the machine restarts at this time (logged-in users are warned first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_planned: Option<u64>,
    /// The source (agent.toml `sources`) that answered the last check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_by: Option<String>,
}

/// What an automatic update waits for (agent.toml `on_battery`, `on_metered`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Waiting {
    /// UPower says the machine runs on battery.
    OnBattery,
    /// NetworkManager says the connection is metered.
    Metered,
}

impl Waiting {
    /// The words `tiffin status` and the reports use.
    pub fn label(self) -> &'static str {
        match self {
            Waiting::OnBattery => "mains power (on battery)",
            Waiting::Metered => "a network that is not metered",
        }
    }
}

/// An update the user postponed: no reminder of `generation` before `until` (Unix seconds),
/// which is never after the admin's deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Postponed {
    pub generation: u64,
    pub until: u64,
}

impl AgentStatus {
    /// The postponement of the generation that waits now, while it runs.
    pub fn postponed_until(&self, now: u64) -> Option<u64> {
        let p = self.postponed?;
        let waiting = self.available_generation? == p.generation
            && !matches!(self.applied_generation, Some(a) if a >= p.generation);
        (waiting && p.until > now).then_some(p.until)
    }
}

/// Now, as Unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
