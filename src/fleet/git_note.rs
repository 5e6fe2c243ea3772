//! The default change note of `tiffin fleet publish`: the subject of the fleet repository's last
//! git commit, when the repository is a git repository (`-m` overrides it).

use crate::manifest::clean_note;
use crate::runner::Runner;
use std::path::Path;
use std::time::Duration;

/// The subject of the last commit of the git repository holding `fleet_dir`, as a note. `None`
/// when it is not in a git repository, has no commit yet, or git is not installed.
pub fn last_commit_subject(fleet_dir: &Path, runner: &Runner) -> Option<String> {
    let out = runner
        .run_in(
            "git",
            &["log", "-1", "--format=%s", "--no-show-signature"],
            Some(fleet_dir),
            Some(Duration::from_secs(10)),
        )
        .ok()?;
    if !out.success() {
        return None;
    }
    clean_note(&out.stdout)
}

/// The note a publish carries: `-m TEXT` when given (an empty text: none), else the last
/// commit's subject.
pub fn publish_note(fleet_dir: &Path, message: Option<&str>) -> Option<String> {
    match message {
        Some(m) => clean_note(m),
        None => last_commit_subject(fleet_dir, &Runner::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn the_default_note_is_the_last_commit_subject_and_none_outside_git() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(last_commit_subject(dir.path(), &Runner::new()), None);
        let git = |args: &[&str]| {
            Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@example.org"])
                .args(args)
                .current_dir(dir.path())
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        };
        if !git(&["init", "-q"]) {
            eprintln!("git is not installed: only the non-repository case was checked");
            return;
        }
        std::fs::write(dir.path().join("fleet.toml"), "x").unwrap();
        assert!(git(&["add", "fleet.toml"]));
        assert!(git(&[
            "commit",
            "-q",
            "-m",
            "Adds the office printer\n\nLonger body."
        ]));
        assert_eq!(
            last_commit_subject(dir.path(), &Runner::new()).as_deref(),
            Some("Adds the office printer")
        );
        assert_eq!(
            publish_note(dir.path(), Some("Explicit")).as_deref(),
            Some("Explicit")
        );
        assert_eq!(publish_note(dir.path(), Some("")), None);
    }
}
