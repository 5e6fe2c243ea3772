//! The socket file: created with its directory, owner, group and mode, a stale one from a dead
//! agent replaced, another agent's never.

use super::ServerError;
use nix::unistd::{Gid, Uid};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use tokio::net::UnixListener;

/// Binds the socket: creates its directory, removes a stale socket left by a dead agent, and
/// gives it mode 0660 and the group `group` (when known).
pub fn bind(path: &Path, group: Option<Gid>) -> Result<UnixListener, ServerError> {
    let io_at = |p: &Path| {
        let p = p.to_path_buf();
        move |source| ServerError::Io { path: p, source }
    };
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io_at(dir))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .map_err(io_at(dir))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ServerError::InUse { path: path.into() });
            }
            std::fs::remove_file(path).map_err(io_at(path))?;
        }
        Ok(_) => return Err(ServerError::NotASocket { path: path.into() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_at(path)(e)),
    }
    let std_listener = std::os::unix::net::UnixListener::bind(path).map_err(io_at(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io_at(path))?;
    if let Some(gid) = group {
        let owner = Uid::effective().is_root().then(|| Uid::from_raw(0));
        if let Err(e) = nix::unistd::chown(path, owner, Some(gid)) {
            if Uid::effective().is_root() {
                return Err(io_at(path)(e.into()));
            }
            tracing::warn!(path = %path.display(), error = %e, "cannot give the socket to its group");
        }
    }
    std_listener.set_nonblocking(true).map_err(io_at(path))?;
    UnixListener::from_std(std_listener).map_err(io_at(path))
}

/// The inode of the socket we bound, so that shutdown removes only our own socket.
pub fn socket_identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}
