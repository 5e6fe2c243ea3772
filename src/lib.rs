//! tiffin keeps a fleet of NixOS machines on the configuration kept in one repository.
//!
//! The library holds every piece; the binaries in `src/bin` only parse arguments and call in.
//! See ARCHITECTURE.md for the map and the invariants.

pub mod agent;
pub mod backup;
pub mod cli;
pub mod config;
pub mod cycle;
pub mod demo;
pub mod fleet;
pub mod fsutil;
pub mod hash;
pub mod ipc;
pub mod manifest;
pub mod nixcache;
pub mod nixcli;
pub mod publication;
pub mod runner;
pub mod seal;
pub mod sign;
pub mod source;
pub mod status;
pub mod timefmt;
pub mod tray;

/// The version every report and `seen.json` carries.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
