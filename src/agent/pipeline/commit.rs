//! Step 6: make the verified system the boot default (system profile, then boot entry). The
//! profile alone is also put back here when a commit or a rollback has to undo it. Each command
//! is killed, with everything it started, after `timeout` (`activate_timeout`).

use super::system::command_outcome;
use crate::config::SystemConfig;
use crate::runner::{CmdOutput, Runner};
use std::time::Duration;

/// The agent.toml key that limits these commands, named in a timeout's message.
const KEY: &str = "activate_timeout";

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
    command_outcome(out, KEY)
}
