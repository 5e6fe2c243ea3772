//! `tiffin fleet diff HOST`: what changes between the system a host runs (`seen.json`, or a
//! newer success report) and the one its published manifest expects (`fleet build`), as
//! `nvd diff` when nvd is installed, else `nix --extra-experimental-features nix-command store
//! diff-closures` (no nix.conf needs to enable it), through the command runner.

use super::status::{assess, resolve_host, FleetViewError, HostRecords};
use crate::config::fleet::FleetConfig;
use crate::runner::Runner;
use std::path::Path;

/// The executable `name` on `$PATH`, if any.
pub fn on_path(name: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The two systems to compare, or why they are not known.
pub fn systems(config: &FleetConfig, host: &str) -> Result<(String, String), FleetViewError> {
    let listed = resolve_host(config, host)?;
    let rec = HostRecords::read(&config.chroot, host);
    let st = assess(&rec, listed, crate::status::unix_now());
    let expected = match (st.published_generation, st.expected_system) {
        (None, _) => {
            return Err(FleetViewError::Unknown(format!(
                "{host}: nothing is published for it ({} has no `current`), so there is no expected system",
                config.chroot.join(host).display()
            )))
        }
        (Some(g), None) => {
            return Err(FleetViewError::Unknown(format!(
                "{host}: generation g{g} was published without an expected system; publish with `tiffin fleet publish --build` so its manifest records one"
            )))
        }
        (Some(_), Some(e)) => e,
    };
    let running = st.running_system.ok_or_else(|| {
        FleetViewError::Unknown(format!(
            "{host}: its running system is unknown: its agent has not uploaded {} with a running system yet",
            Path::new("logs").join(crate::publication::SEEN_NAME).display()
        ))
    })?;
    Ok((running, expected))
}

/// Prints the difference; returns the exit code (0 when the tool succeeded).
pub fn closure_diff(
    config: &FleetConfig,
    host: &str,
    runner: &Runner,
    out: &mut dyn std::io::Write,
    err: &mut dyn std::io::Write,
) -> Result<u8, FleetViewError> {
    let (running, expected) = systems(config, host)?;
    let io = |e: std::io::Error| FleetViewError::Io {
        place: "stdout".into(),
        source: e,
    };
    writeln!(
        out,
        "{host}: running  {running}\n{host}: expected {expected}"
    )
    .map_err(io)?;
    if running == expected {
        writeln!(out, "{host} runs the expected system: no difference").map_err(io)?;
        return Ok(0);
    }
    let (program, args): (String, Vec<&str>) = match on_path("nvd") {
        Some(nvd) => (
            nvd.to_string_lossy().into_owned(),
            vec!["diff", &running, &expected],
        ),
        None => (
            config.build.nix.clone(),
            crate::nixcli::COMMAND_FEATURE
                .into_iter()
                .chain(["store", "diff-closures", &running, &expected])
                .collect(),
        ),
    };
    let result = runner
        .run(&program, &args, None)
        .map_err(|e| FleetViewError::Io {
            place: program.clone(),
            source: e,
        })?;
    out.write_all(result.stdout.as_bytes()).map_err(io)?;
    err.write_all(result.stderr.as_bytes()).map_err(io)?;
    if result.success() {
        Ok(0)
    } else {
        writeln!(
            err,
            "tiffin: {} (both systems must be in this machine's Nix store: copy the running one with `nix copy --from ssh://{host} {running}`)",
            result.describe_failure()
        )
        .map_err(io)?;
        Ok(1)
    }
}
