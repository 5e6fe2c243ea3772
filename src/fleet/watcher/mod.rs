//! `tiffin fleet watch`: the server's long-running follower of the fleet. It wakes on inotify
//! events under the chroot (a report or `seen.json` landing in a host's `logs/`, `current`
//! replaced, fleet.toml edited) and once a minute; each time it advances the staged rollout
//! (`fleet::rollout::advance`), runs the alert command on every transition to failing, rolled
//! back, stale, drifted or halted (`alerts`), and renders the Prometheus text the metrics
//! listener serves (`metrics`, `serve`).

mod alerts;
mod metrics;
mod serve;

pub use alerts::{AlertEvent, Alerts};
pub use metrics::render as render_metrics;

use crate::config::FleetConfig;
use crate::fleet::publish::PublishOptions;
use crate::fleet::rollout::{self, RolloutState, Step};
use crate::fleet::status::{add_watches, fleet_status, wait_for_change, FleetViewError};
use nix::sys::inotify::{InitFlags, Inotify};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What `fleet watch` does besides watching.
#[derive(Clone, Debug, Default)]
pub struct WatchOptions {
    /// `sh -c CMD`, the event as one JSON object on stdin.
    pub alert_command: Option<String>,
    /// Where to serve `/metrics`.
    pub metrics: Option<SocketAddr>,
    /// Overrides fleet.toml's `[rollout] soak`.
    pub soak: Option<Duration>,
    /// Advance staged rollouts.
    pub advance: bool,
    /// How promoted waves are published.
    pub publish: PublishOptions,
}

/// Runs until killed (or until the metrics address cannot be bound, or inotify fails).
pub fn run(fleet_dir: &Path, opts: &WatchOptions) -> Result<(), FleetViewError> {
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
        .map_err(|e| io_err("inotify", e.into()))?;
    let page = Arc::new(Mutex::new(String::new()));
    if let Some(addr) = opts.metrics {
        let bound = serve::bind(addr).map_err(|e| io_err(&format!("--metrics {addr}"), e))?;
        tracing::info!(
            "serving metrics at http://{}/metrics",
            bound.local_addr().map_or(addr, |a| a)
        );
        let page = Arc::clone(&page);
        std::thread::spawn(move || serve::serve(bound, page));
    }
    let mut config = FleetConfig::load(fleet_dir)?;
    let mut alerts = Alerts::new(opts.alert_command.clone());
    let mut warned = false;
    loop {
        add_watches(&inotify, fleet_dir, &config, &mut warned);
        let now = crate::status::unix_now();
        one_round(fleet_dir, &config, opts, &mut alerts, &page, now);
        wait_for_change(&inotify, now)?;
        match FleetConfig::load(fleet_dir) {
            Ok(c) => config = c,
            Err(e) => tracing::warn!("{e} (watching with the last valid fleet.toml)"),
        }
    }
}

/// One look at the fleet: advance, alert, render the metrics.
pub fn one_round(
    fleet_dir: &Path,
    config: &FleetConfig,
    opts: &WatchOptions,
    alerts: &mut Alerts,
    page: &Mutex<String>,
    now: u64,
) {
    if opts.advance {
        match rollout::advance(fleet_dir, config, &opts.publish, opts.soak, now) {
            Ok(Step::Promoted { id, wave, .. }) => {
                tracing::info!("release {id}: published to wave {wave}")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("rollout: {e}"),
        }
    }
    let status = fleet_status(config, now);
    let rollout = RolloutState::load(&config.chroot).unwrap_or_else(|e| {
        tracing::warn!("{e}");
        RolloutState::default()
    });
    alerts.observe(&status, &rollout, now);
    let text = metrics::render(&status, &rollout, now);
    if let Ok(mut p) = page.lock() {
        *p = text;
    }
}

fn io_err(place: &str, e: std::io::Error) -> FleetViewError {
    FleetViewError::Io {
        place: place.to_string(),
        source: e,
    }
}
