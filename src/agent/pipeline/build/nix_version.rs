//! At start the agent asks its `nix` for its version and says what it found, against the lowest
//! Nix tiffin supports ([`crate::nixcli::MIN_NIX`]).

use crate::config::SystemConfig;
use crate::nixcli::{parse_version, MIN_NIX};
use crate::runner::Runner;
use std::time::Duration;

/// What the check found, as the line the agent logs; `Err` when the version is below the floor
/// or could not be read.
pub fn check(sys: &SystemConfig) -> Result<String, String> {
    let (maj, min) = MIN_NIX;
    let out = Runner::new()
        .run(&sys.nix, &["--version"], Some(Duration::from_secs(20)))
        .map_err(|e| format!("cannot run `{} --version` ([system] nix): {e}", sys.nix))?;
    let text = out.stdout.trim().to_string();
    match parse_version(&text) {
        Some(v) if out.success() && v >= MIN_NIX => Ok(format!(
            "{text} ({}; tiffin needs Nix {maj}.{min} or later)",
            sys.nix
        )),
        Some(_) if out.success() => Err(format!(
            "{text} ({}) is older than Nix {maj}.{min}, the lowest tiffin supports: builds will fail",
            sys.nix
        )),
        _ => Err(format!(
            "cannot tell the Nix version of {} ([system] nix): `{} --version` printed {:?}; tiffin needs Nix {maj}.{min} or later",
            sys.nix,
            sys.nix,
            out.combined().trim()
        )),
    }
}

/// Logs what [`check`] found (a warning when it is not a supported Nix).
pub fn announce(sys: &SystemConfig) {
    match check(sys) {
        Ok(line) => tracing::info!("{line}"),
        Err(why) => tracing::warn!("{why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn fake(dir: &std::path::Path, says: &str) -> SystemConfig {
        let p = dir.join(format!("nix-{}", says.len()));
        std::fs::write(&p, format!("#!/bin/sh\necho '{says}'\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        SystemConfig {
            nix: p.display().to_string(),
            ..SystemConfig::default()
        }
    }

    #[test]
    fn the_version_is_checked_against_the_floor() {
        let d = tempfile::tempdir().unwrap();
        let ok = check(&fake(d.path(), "nix (Nix) 2.8.0")).unwrap();
        assert!(ok.contains("2.8.0") && ok.contains("2.4 or later"), "{ok}");
        let old = check(&fake(d.path(), "nix (Nix) 2.3.16")).unwrap_err();
        assert!(old.contains("older than Nix 2.4"), "{old}");
        let odd = check(&fake(d.path(), "what")).unwrap_err();
        assert!(odd.contains("cannot tell"), "{odd}");
    }
}
