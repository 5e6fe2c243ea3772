//! The admin's side (docs/publication.md, §7): `fleet init`, `publish`, `build`, `status`, `diff`,
//! `sshd-config`. Turns the fleet repository into per-host publications under the chroot root.
//!
//! Must not write outside the chroot root (and, for `init`, the new repository); must never leave
//! a half-written generation visible behind `current`.

pub mod build;
pub mod diff;
pub mod git_note;
pub mod inert;
pub mod init;
pub mod logs;
pub mod mirror;
pub mod never_publish;
pub mod nix_build;
pub mod objstore;
pub mod publish;
pub mod report;
pub mod rollout;
pub mod seal_state;
pub mod signing;
pub mod sshd;
pub mod status;
pub mod users;
pub mod watcher;

pub use crate::publication::Publication;
pub use build::{build_hosts, BuildOptions, BuildReport, HostBuild};
pub use nix_build::BuildMode;
pub use publish::{
    publish, publish_host, publish_with_progress, HostReport, HostResult, PublishOptions,
    PublishReport,
};

use crate::config::FleetConfig;

/// The hosts a command works on: the named ones (each must be in fleet.toml), or all of them.
pub fn select_hosts(config: &FleetConfig, named: &[String]) -> Result<Vec<String>, UnknownHost> {
    if named.is_empty() {
        return Ok(config.hosts.keys().cloned().collect());
    }
    let mut out = Vec::new();
    for n in named {
        if !config.hosts.contains_key(n) {
            return Err(UnknownHost {
                host: n.clone(),
                known: config.hosts.keys().cloned().collect(),
            });
        }
        if !out.contains(n) {
            out.push(n.clone());
        }
    }
    Ok(out)
}

/// A host named on the command line that fleet.toml does not have.
#[derive(Debug, thiserror::Error)]
#[error("host {host:?} is not in fleet.toml (hosts: {})", if known.is_empty() { "none".to_string() } else { known.join(", ") })]
pub struct UnknownHost {
    pub host: String,
    pub known: Vec<String>,
}
