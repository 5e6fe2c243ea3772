//! The running NixOS as the agent sees it: the current and booted system links, and what a
//! command's output means ("No space left" is a failure whatever the exit code).

use crate::config::SystemConfig;
use crate::runner::CmdOutput;
use std::fs;
use std::path::Path;

/// The links whose difference between the running and the booted system means "reboot needed".
const BOOT_LINKS: [&str; 3] = ["kernel", "initrd", "kernel-modules"];

/// The store path a system link points to (fully resolved), or `None` when it does not exist.
pub fn resolve_system(link: &Path) -> Option<String> {
    fs::canonicalize(link)
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// The running system (`current_system`, resolved).
pub fn current_system(sys: &SystemConfig) -> Option<String> {
    resolve_system(&sys.current_system)
}

/// The booted system (`booted_system`, resolved).
pub fn booted_system(sys: &SystemConfig) -> Option<String> {
    resolve_system(&sys.booted_system)
}

/// True when the running system's kernel, initrd or kernel modules differ from the booted one's.
/// Missing links on both sides count as equal; a link present on one side only as a difference.
pub fn reboot_needed(sys: &SystemConfig) -> bool {
    BOOT_LINKS.iter().any(|name| {
        let cur = resolve_system(&sys.current_system.join(name));
        let boot = resolve_system(&sys.booted_system.join(name));
        cur != boot
    })
}

/// Why a command's run counts as failed, if it does.
pub fn command_failure(out: &CmdOutput) -> Option<String> {
    if out.combined().contains("No space left") {
        return Some(format!(
            "`{}` reported \"No space left on device\" (exit code {:?}); treated as a failure",
            out.command, out.code
        ));
    }
    if !out.success() {
        return Some(out.describe_failure());
    }
    None
}

/// [`command_failure`] for a command run under the agent.toml duration `key`: a timeout names
/// the key that set it.
pub fn command_failure_within(out: &CmdOutput, key: &str) -> Option<String> {
    command_failure(out).map(|why| {
        if out.timed_out {
            format!("{why} (the limit is `{key}` in agent.toml)")
        } else {
            why
        }
    })
}

/// `Ok` when `out` ran to a successful end, else why not (see [`command_failure_within`]).
pub fn command_outcome(out: std::io::Result<CmdOutput>, key: &str) -> Result<(), String> {
    let out = out.map_err(|e| e.to_string())?;
    match command_failure_within(&out, key) {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::time::Duration;

    fn out(code: i32, stdout: &str, stderr: &str) -> CmdOutput {
        CmdOutput {
            command: "x".into(),
            code: Some(code),
            stdout: stdout.into(),
            stderr: stderr.into(),
            timed_out: false,
            duration: Duration::ZERO,
        }
    }

    #[test]
    fn no_space_left_fails_even_with_exit_code_zero() {
        assert!(command_failure(&out(0, "/nix/store/x\n", "")).is_none());
        let f = command_failure(&out(0, "", "error: No space left on device")).unwrap();
        assert!(f.contains("No space left"), "{f}");
        assert!(command_failure(&out(1, "", "boom"))
            .unwrap()
            .contains("boom"));
    }

    #[test]
    fn reboot_needed_compares_kernel_initrd_and_modules() {
        let d = tempfile::tempdir().unwrap();
        let mk = |name: &str, kernel: &str| {
            let s = d.path().join(name);
            fs::create_dir_all(&s).unwrap();
            for k in BOOT_LINKS {
                let target = d.path().join(format!("{kernel}-{k}"));
                fs::write(&target, k).unwrap();
                symlink(&target, s.join(k)).unwrap();
            }
            s
        };
        let a = mk("sys-a", "k1");
        let b = mk("sys-b", "k1");
        let c = mk("sys-c", "k2");
        let sys = |cur: &Path, boot: &Path| SystemConfig {
            current_system: cur.to_path_buf(),
            booted_system: boot.to_path_buf(),
            ..SystemConfig::default()
        };
        assert!(!reboot_needed(&sys(&a, &b)));
        assert!(reboot_needed(&sys(&a, &c)));
    }
}
