//! The admin's side (DESIGN §2, §7): `fleet init`, `publish`, `build`, `status`, `diff`,
//! `sshd-config`. Turns the fleet repository into per-host publications under the chroot root.
//!
//! Must not write outside the chroot root (and, for `init`, the new repository); must never leave
//! a half-written generation visible behind `current`.

pub mod diff;
pub mod logs;
pub mod status;
