//! What the view depends on besides the status, gathered by the caller.

/// Why the agent cannot be reached, as far as the tray can tell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DownReason {
    /// No socket, or nobody answering on it.
    #[default]
    NotRunning,
    /// The socket is there but this user may not open it (not in its group).
    NotAllowed,
}

/// What the view depends on besides the status; gathered by the caller (the view does no I/O).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewContext {
    /// Unix seconds.
    pub now: u64,
    /// The local time zone, for clock times such as "Rolled back at 14:02".
    pub tz: jiff::tz::TimeZone,
    /// Root, or a member of the status's `admin_group`.
    pub user_may_rollback: bool,
    /// The XDG autostart entry exists.
    pub start_at_login: bool,
    /// Shown while the status is `None`.
    pub down_reason: DownReason,
}
