//! tiffin's integration tests: one crate, so the library, ssh2 and GTK are linked once.
//!
//! Each module is what was once a test binary of its own and says at its top what it proves.
//! Support code lives in `support/`; `support::require!` is the one prerequisite check (it skips
//! a test when the machine cannot run it, and fails it under `CI=true`). Run one area with a
//! filter: `cargo test --test it pipeline_` or one module's tests: `cargo test --test it demo::`.

// Support code, under the names the modules use for it.
#[path = "support/daemon/mod.rs"]
mod daemon_support;
#[path = "support/faults/mod.rs"]
mod faults_support;
#[path = "support/fleet_status/mod.rs"]
mod fleet_status_support;
#[path = "support/fleet/mod.rs"]
mod fleet_support;
#[path = "support/pipeline/mod.rs"]
mod pipeline_support;
#[path = "support/real_nix/mod.rs"]
mod real_nix;
mod support;
#[cfg(feature = "tray")]
#[path = "support/tray/mod.rs"]
mod support_tray;
#[path = "support/system_bus.rs"]
mod system_bus;

/// The tray tests' prerequisite (Xvfb, D-Bus, the Python harness): skip here, fail under CI.
#[cfg(feature = "tray")]
fn desktop_available(test: &str) -> bool {
    support::prerequisite(test, support_tray::missing_prerequisite())
}

mod agent_metrics;
mod architecture;
mod backup_power;
mod backup_restic;
mod bench_serve_checks;
mod cli_help;
mod client_update;
mod client_watch_restart;
mod daemon_http_trigger;
mod daemon_misbehaving_clients;
mod daemon_peer_access;
mod daemon_systemd_notify;
mod demo;
mod desk_changes;
mod desk_changes_real_nix;
mod desk_power;
mod faults_clock;
mod faults_connection;
mod faults_disk;
mod faults_publish_kill;
mod files_race;
mod fleet_cli;
mod fleet_mirrors;
mod fleet_never_publish;
mod fleet_ownership;
mod fleet_publish;
mod fleet_real_nix;
mod fleet_rollout;
mod fleet_status;
mod fleet_watch;
mod fuzz_corpus;
mod http_source;
mod packaging;
mod pipeline_cycle;
mod pipeline_files;
mod pipeline_hang;
mod pipeline_kill;
mod pipeline_real_nix;
mod pipeline_sshd;
mod pipeline_sshd_real_nix;
mod pipeline_status;
mod prebuilt_cache;
mod publish_s3;
mod sealed_files;
mod sftp_faults;
mod sftp_fetch;
mod sftp_isolation;
mod signed_publications;
mod sources_failover;
#[cfg(feature = "tray")]
mod tray_agent;
#[cfg(feature = "tray")]
mod tray_backup;
#[cfg(feature = "tray")]
mod tray_cli;
#[cfg(feature = "tray")]
mod tray_dbus;
#[cfg(feature = "tray")]
mod tray_desk;
#[cfg(feature = "tray")]
mod tray_screenshots;
