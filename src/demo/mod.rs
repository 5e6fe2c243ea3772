//! `tiffin demo` (DESIGN §8): the whole system in one directory on one machine — a fleet
//! repository, its publication (`file://`, standing in for the central SFTP server), a simulated
//! NixOS machine with its agent — for someone trying tiffin for the first time.
//!
//! This module builds and changes the sandbox; `cli::demo` walks the user through it. Nothing
//! here writes outside the demo directory.

pub mod fake_nixos;
pub mod real_nixos;
pub mod sandbox;
pub mod sshd;
pub mod supervise;

pub use fake_nixos::FakeNixos;
pub use sandbox::{Sandbox, DEMO_HOST, HOSTS};
