//! `tiffin demo` (docs/pieces.md): the whole system in one directory on one machine — a fleet
//! repository, its publication (`file://`, standing in for the central SFTP server), a simulated
//! NixOS machine with its agent — for someone trying tiffin for the first time.
//!
//! `sandbox` builds and changes the sandbox; `walkthrough` walks the user through it, waiting on
//! `events` and running the agent, tray and sshd through `supervise`; `cli::demo` only parses the
//! arguments. Nothing here writes outside the demo directory (except `--sftp`'s users, group
//! and sshd, see `sshd`).

pub mod fake_nixos;
pub mod real_nixos;
pub mod sandbox;
pub mod sshd;

// The walk-through and its parts print through these (declared before them).
/// `println!` that ignores a closed stdout (`tiffin demo | head`): the demo must still clean up.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// `eprintln!` that ignores a closed stderr.
macro_rules! warn {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

mod events;
mod session;
pub mod supervise;
pub mod walkthrough;

pub use fake_nixos::FakeNixos;
pub use sandbox::{Sandbox, DEMO_HOST, HOSTS};
