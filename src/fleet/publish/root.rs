//! The chroot root: created when missing, checked against what sshd wants of a chroot path, and
//! locked so that two publish runs on one root do not interleave.

use super::outcome::{PublishError, PublishOptions, HOST_DIR_MODE};
use crate::config::FleetConfig;
use crate::fleet::users;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The lock that keeps two publish runs on one chroot root from interleaving.
pub(super) const LOCK_FILE: &str = ".tiffin-publish.lock";

/// Creates the chroot root when missing, warns when sshd would refuse it, and takes the lock.
pub(super) fn prepare_chroot_root(
    config: &FleetConfig,
    opts: &PublishOptions,
    warnings: &mut Vec<String>,
) -> Result<Option<nix::fcntl::Flock<File>>, PublishError> {
    let root = &config.chroot;
    let err = |source: io::Error| PublishError::ChrootRoot {
        path: root.clone(),
        source,
    };
    if opts.dry_run {
        return Ok(None);
    }
    if !root.is_dir() {
        fs::create_dir_all(root).map_err(err)?;
        fs::set_permissions(root, fs::Permissions::from_mode(HOST_DIR_MODE)).map_err(err)?;
    }
    if users::is_root() && !opts.keep_owner {
        if let Some(why) = chroot_path_problem(root) {
            warnings.push(format!(
                "sshd will refuse ChrootDirectory under {}: {why}",
                root.display()
            ));
        }
    }
    let path = root.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|source| PublishError::Lock {
            path: path.clone(),
            source,
        })?;
    use nix::fcntl::{Flock, FlockArg};
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(Some(l)),
        Err((file, nix::errno::Errno::EWOULDBLOCK)) => {
            tracing::info!(
                "waiting for another `tiffin fleet publish` on {}",
                root.display()
            );
            Flock::lock(file, FlockArg::LockExclusive)
                .map(Some)
                .map_err(|(_, e)| PublishError::Lock {
                    path,
                    source: e.into(),
                })
        }
        Err((_, e)) => Err(PublishError::Lock {
            path,
            source: e.into(),
        }),
    }
}

/// sshd wants every component of a chroot path owned by root and writable by no one else.
fn chroot_path_problem(root: &Path) -> Option<String> {
    let real = fs::canonicalize(root).ok()?;
    for dir in real.ancestors() {
        let m = fs::metadata(dir).ok()?;
        if m.uid() != 0 {
            return Some(format!("{} is not owned by root", dir.display()));
        }
        if m.mode() & 0o022 != 0 {
            return Some(format!(
                "{} is writable by group or others (mode {:o})",
                dir.display(),
                m.mode() & 0o7777
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chroot_path_writable_by_the_group_is_named() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("srv");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o775)).unwrap();
        let why = chroot_path_problem(&dir).expect("a problem");
        // The temporary directory's parents may already be the problem (not owned by root when
        // not run as root); as root, the group-writable directory is.
        if nix::unistd::geteuid().is_root() {
            assert!(
                why.contains("writable by group or others (mode 775)"),
                "{why}"
            );
            assert!(why.contains(&dir.display().to_string()), "{why}");
        }
    }

    #[test]
    fn a_second_run_waits_for_the_lock() {
        let t = tempfile::tempdir().unwrap();
        const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOhfranTNzd5iz9u62K9DBWkqC9JBYkSle3Nr25o6PSa root@laptop";
        let c = FleetConfig::parse(
            &format!(
                "chroot = \"{}\"\n[hosts.laptop]\nkey = \"{KEY}\"\n",
                t.path().join("root").display()
            ),
            "fleet.toml",
        )
        .unwrap();
        let opts = PublishOptions {
            keep_owner: true,
            ..Default::default()
        };
        let first = prepare_chroot_root(&c, &opts, &mut vec![]).unwrap();
        assert!(first.is_some());
        let (tx, rx) = std::sync::mpsc::channel();
        let c2 = c.clone();
        let opts2 = opts.clone();
        let waiter = std::thread::spawn(move || {
            let l = prepare_chroot_root(&c2, &opts2, &mut vec![]).unwrap();
            tx.send(()).unwrap();
            drop(l);
        });
        let waited = rx.recv_timeout(std::time::Duration::from_millis(300));
        assert!(waited.is_err(), "the second run did not wait for the lock");
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("the second run went on once the lock was free");
        waiter.join().unwrap();
        let dry = PublishOptions {
            dry_run: true,
            ..opts
        };
        assert!(prepare_chroot_root(&c, &dry, &mut vec![])
            .unwrap()
            .is_none());
    }
}
