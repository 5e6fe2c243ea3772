//! Steps 4 and 6: test-activate a system, and commit it (system profile, then boot entry).
//! The same [`activate_test`] re-activates the previous system on a rollback.

use super::system::command_failure;
use crate::config::SystemConfig;
use crate::runner::Runner;

/// Runs `<system>/bin/switch-to-configuration test`. With `systemd_run` configured it runs as
/// the transient unit `unit`, so that a restart of the agent's own unit does not kill it.
pub fn activate_test(
    runner: &Runner,
    sys: &SystemConfig,
    system: &str,
    unit: &str,
) -> Result<(), String> {
    let stc = format!("{system}/bin/switch-to-configuration");
    let out = if sys.systemd_run.is_empty() {
        runner.run(&stc, &["test"], None)
    } else {
        let unit_arg = format!("--unit={unit}");
        runner.run(
            &sys.systemd_run,
            &[
                unit_arg.as_str(),
                "--wait",
                "--collect",
                "--pipe",
                "--quiet",
                "--service-type=exec",
                "--",
                stc.as_str(),
                "test",
            ],
            None,
        )
    }
    .map_err(|e| e.to_string())?;
    match command_failure(&out) {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

/// Makes `system` the boot default: `nix-env -p <profile> --set <system>`, then
/// `<system>/bin/switch-to-configuration boot`.
pub fn commit(runner: &Runner, sys: &SystemConfig, system: &str) -> Result<(), String> {
    set_profile(runner, sys, system)?;
    let stc = format!("{system}/bin/switch-to-configuration");
    let out = runner
        .run(&stc, &["boot"], None)
        .map_err(|e| e.to_string())?;
    match command_failure(&out) {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

/// Points the system profile at `system` (a new profile generation).
pub fn set_profile(runner: &Runner, sys: &SystemConfig, system: &str) -> Result<(), String> {
    let profile = sys.profile.to_string_lossy();
    let out = runner
        .run(
            &sys.nix_env,
            &["-p", profile.as_ref(), "--set", system],
            None,
        )
        .map_err(|e| e.to_string())?;
    match command_failure(&out) {
        Some(why) => Err(why),
        None => Ok(()),
    }
}
