//! Whether a scheduled backup may start now: the seam where "on AC power, like updates" is
//! decided. Today it always says yes; the UPower reading the updates use is meant to be wired in
//! here (one function, so the daemon's backup task does not change).

/// True when a scheduled backup may start now. A backup asked for by a person ("Back up now",
/// `tiffin backup now`) does not ask.
pub fn may_run_now() -> bool {
    true
}
