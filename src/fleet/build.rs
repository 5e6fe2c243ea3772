//! `fleet build`: stages each host into a temporary directory and builds it there with
//! [`super::nix_build`], writing nothing under the chroot root.

use super::nix_build::{build_system, BuildError, BuildMode};
use super::publish::{stage_host, StageError};
use crate::config::FleetConfig;
use crate::runner::Runner;
use std::path::Path;
use std::time::{Duration, Instant};

/// What `fleet build` does.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// Hosts to build; empty: all.
    pub hosts: Vec<String>,
    pub mode: BuildMode,
    /// Hosts built at the same time.
    pub jobs: usize,
}

/// One host's build.
#[derive(Clone, Debug)]
pub struct HostBuild {
    pub host: String,
    /// The system store path (a real build), `Ok(None)` for a dry run, or the error.
    pub result: Result<Option<String>, String>,
    pub elapsed: Duration,
}

/// Every host's build, in fleet.toml order.
#[derive(Clone, Debug, Default)]
pub struct BuildReport {
    pub hosts: Vec<HostBuild>,
}

impl BuildReport {
    pub fn failed(&self) -> usize {
        self.hosts.iter().filter(|h| h.result.is_err()).count()
    }
}

/// `fleet build`: stages each host into a temporary directory and builds it; writes nothing
/// under the chroot root.
pub fn build_hosts(
    fleet_dir: &Path,
    config: &FleetConfig,
    opts: &BuildOptions,
    on_done: &(dyn Fn(&HostBuild) + Sync),
) -> Result<BuildReport, super::UnknownHost> {
    let hosts = super::select_hosts(config, &opts.hosts)?;
    let runner = Runner::new();
    let results = super::publish::in_parallel(&hosts, opts.jobs, |host| {
        let start = Instant::now();
        let result = build_one(fleet_dir, config, &runner, host, opts.mode);
        let b = HostBuild {
            host: host.clone(),
            result: result.map_err(|e| format!("host {host}: {e}")),
            elapsed: start.elapsed(),
        };
        on_done(&b);
        b
    });
    Ok(BuildReport { hosts: results })
}

fn build_one(
    fleet_dir: &Path,
    config: &FleetConfig,
    runner: &Runner,
    host: &str,
    mode: BuildMode,
) -> Result<Option<String>, StageOrBuild> {
    let hc = &config.hosts[host];
    let staging = tempfile::Builder::new()
        .prefix(&format!("tiffin-build-{host}-"))
        .tempdir()
        .map_err(|e| StageOrBuild::Stage(StageError::Io(e)))?;
    let tree = staging.path().join("tree");
    stage_host(fleet_dir, config, host, &tree).map_err(StageOrBuild::Stage)?;
    build_system(&config.build, runner, &tree, hc.attr_or_default(host), mode)
        .map_err(StageOrBuild::Build)
}

#[derive(Debug, thiserror::Error)]
enum StageOrBuild {
    #[error(transparent)]
    Stage(StageError),
    #[error(transparent)]
    Build(BuildError),
}
