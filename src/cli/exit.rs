//! The exit codes every `tiffin` command shares (the scripts' contract).

/// Exit code: success (up to date or updated).
pub const EXIT_OK: u8 = 0;
/// Exit code: the operation failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad configuration or usage.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the update was rolled back.
pub const EXIT_ROLLED_BACK: u8 = 3;
