//! The system being applied is a GC root from its build until the cycle ends (commit, rollback
//! or failure), as `nixos-rebuild` holds its `result`: Nix builds it with
//! `--out-link <state_dir>/build-result`, which registers the link as an indirect root, so a
//! `nix-collect-garbage` run by a timer during activation or verification cannot delete it.
//! Once committed the system profile holds it; after a rollback nothing needs it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The link the build creates, in the agent's state directory.
pub const RESULT_LINK: &str = "build-result";

/// Where the build puts its GC-root link.
pub fn link(state_dir: &Path) -> PathBuf {
    state_dir.join(RESULT_LINK)
}

/// Drops the root (Nix forgets its registration of a link that no longer exists).
pub fn release(state_dir: &Path) -> io::Result<()> {
    let l = link(state_dir);
    match fs::remove_file(&l) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(crate::fsutil::with_path(e, &l)),
        _ => Ok(()),
    }
}

/// The store path the root holds, if any.
pub fn held(state_dir: &Path) -> Option<PathBuf> {
    fs::read_link(link(state_dir)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_removes_the_link_and_is_idempotent() {
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/nix/store/x-system", link(d.path())).unwrap();
        assert_eq!(held(d.path()), Some(PathBuf::from("/nix/store/x-system")));
        release(d.path()).unwrap();
        release(d.path()).unwrap();
        assert_eq!(held(d.path()), None);
    }
}
