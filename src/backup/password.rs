//! The repository password: a file of the agent's (`<state_dir>/backup/password` unless
//! `password_file` names another), made at the first run from 32 random bytes, mode 0600. The
//! server never sees it; keeping a copy for recovery is the admin's job (docs/backup.md).

use crate::fsutil::{atomic_write, with_path};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

/// Makes the password file when it is missing; refuses one that others may read.
pub fn ensure(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) => {
            if !m.is_file() {
                return Err(with_path(
                    io::Error::other("the backup password file is not a regular file"),
                    path,
                ));
            }
            if m.mode() & 0o077 != 0 {
                return Err(with_path(
                    io::Error::other(format!(
                        "the backup password file has mode {:o}; only its owner may read it (chmod 600)",
                        m.mode() & 0o7777
                    )),
                    path,
                ));
            }
            if m.len() == 0 {
                return Err(with_path(
                    io::Error::other("the backup password file is empty"),
                    path,
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => create(path),
        Err(e) => Err(with_path(e, path)),
    }
}

fn create(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| with_path(e, dir))?;
    }
    let mut raw = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .map_err(|e| with_path(e, Path::new("/dev/urandom")))?;
    use base64::Engine as _;
    let mut text = base64::engine::general_purpose::STANDARD_NO_PAD.encode(raw);
    text.push('\n');
    tracing::info!(path = %path.display(), "made the backup repository's password");
    atomic_write(path, text.as_bytes(), 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_password_is_made_once_0600_and_a_readable_one_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("backup/password");
        ensure(&p).unwrap();
        let first = fs::read_to_string(&p).unwrap();
        assert!(first.trim().len() >= 40, "{first}");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        ensure(&p).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), first, "never replaced");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let e = ensure(&p).unwrap_err().to_string();
        assert!(e.contains("password") && e.contains("644"), "{e}");
    }
}
