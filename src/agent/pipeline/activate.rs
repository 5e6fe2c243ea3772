//! Step 4: test-activate a system. The same [`activate_test`] re-activates the previous system
//! on a rollback. Each command is killed, with everything it started, after `timeout`
//! (`activate_timeout`). Making it the boot default is [`super::commit`]'s.

use super::system::command_outcome;
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

fn checked(out: std::io::Result<CmdOutput>) -> Result<(), String> {
    command_outcome(out, KEY)
}
