//! Steps 4 and 6: test-activate a system, and commit it (system profile, then boot entry).
//! The same [`activate_test`] re-activates the previous system on a rollback. Each command is
//! killed, with everything it started, after `timeout` (`activate_timeout`).

use super::system::command_failure_within;
use crate::config::SystemConfig;
use crate::runner::{CmdOutput, Runner};
use std::time::Duration;

/// The agent.toml key that limits these commands, named in a timeout's message.
const KEY: &str = "activate_timeout";

/// Runs `<system>/bin/switch-to-configuration test`. With `systemd_run` configured it runs as
/// the transient unit `unit`, so that a restart of the agent's own unit does not kill it; the
/// unit gets `RuntimeMaxSec` = `timeout`, so that systemd stops it when the runner gives up on
/// the `systemd-run` that waits for it.
pub fn activate_test(
    runner: &Runner,
    sys: &SystemConfig,
    system: &str,
    unit: &str,
    timeout: Duration,
) -> Result<(), String> {
    let stc = format!("{system}/bin/switch-to-configuration");
    let out = if sys.systemd_run.is_empty() {
        runner.run(&stc, &["test"], Some(timeout))
    } else {
        let unit_arg = format!("--unit={unit}");
        let max = format!("--property=RuntimeMaxSec={}ms", timeout.as_millis().max(1));
        runner.run(
            &sys.systemd_run,
            &[
                unit_arg.as_str(),
                max.as_str(),
                "--wait",
                "--collect",
                "--pipe",
                "--quiet",
                "--service-type=exec",
                "--",
                stc.as_str(),
                "test",
            ],
            Some(timeout),
        )
    };
    checked(out)
}

/// Makes `system` the boot default: `nix-env -p <profile> --set <system>`, then
/// `<system>/bin/switch-to-configuration boot`.
pub fn commit(
    runner: &Runner,
    sys: &SystemConfig,
    system: &str,
    timeout: Duration,
) -> Result<(), String> {
    set_profile(runner, sys, system, timeout)?;
    let stc = format!("{system}/bin/switch-to-configuration");
    checked(runner.run(&stc, &["boot"], Some(timeout)))
}

/// Points the system profile at `system` (a new profile generation).
pub fn set_profile(
    runner: &Runner,
    sys: &SystemConfig,
    system: &str,
    timeout: Duration,
) -> Result<(), String> {
    let profile = sys.profile.to_string_lossy();
    checked(runner.run(
        &sys.nix_env,
        &["-p", profile.as_ref(), "--set", system],
        Some(timeout),
    ))
}

fn checked(out: std::io::Result<CmdOutput>) -> Result<(), String> {
    let out = out.map_err(|e| e.to_string())?;
    match command_failure_within(&out, KEY) {
        Some(why) => Err(why),
        None => Ok(()),
    }
}
