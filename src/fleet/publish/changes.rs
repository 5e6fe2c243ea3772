//! `publish --build`: the closure diff between the host's previous `expected_system` (the live
//! manifest's) and the one just built, summarised for the manifest (`manifest::Changes`), with
//! `nix store diff-closures` (fleet.toml `[build] nix`) through the runner.

use crate::config::BuildConfig;
use crate::manifest::{Changes, Manifest};
use crate::runner::Runner;
use std::time::Duration;

/// How long the diff may take.
const DIFF_TIMEOUT: Duration = Duration::from_secs(120);

/// The summary of what `new` changes against `current`'s expected system; `None` without both,
/// when they are the same, or when Nix cannot say (then `note` gets why, for the run's warnings).
pub(super) fn closure_changes(
    build: &BuildConfig,
    runner: &Runner,
    host: &str,
    current: Option<&Manifest>,
    new: Option<&str>,
    note: &dyn Fn(String),
) -> Option<Changes> {
    let (old, new) = (current?.expected_system.as_deref()?, new?);
    if old == new {
        return None;
    }
    let args: Vec<&str> = crate::nixcli::COMMAND_FEATURE
        .into_iter()
        .chain(["store", "diff-closures", old, new])
        .collect();
    match runner.run(&build.nix, &args, Some(DIFF_TIMEOUT)) {
        Ok(out) if out.success() => Some(Changes::from_diff_closures(&out.stdout)),
        Ok(out) => {
            note(format!(
                "host {host}: no change summary: {}",
                out.describe_failure()
            ));
            None
        }
        Err(e) => {
            note(format!(
                "host {host}: no change summary: {}: {e}",
                build.nix
            ));
            None
        }
    }
}
