//! One host's publication on the primary as a push sees it, and what a push did for it: the
//! words every pusher (`sftp`, `rsync`) shares.

use crate::publication::Publication;
use std::fs;
use std::path::Path;

/// One host's publication on the primary, as a push needs it.
pub struct HostJob {
    pub host: String,
    pub publication: Publication,
    /// The generation `current` names on the primary.
    pub live: u64,
    /// Every complete generation on the primary, ascending.
    pub generations: Vec<u64>,
    /// `user:group` of the host's `logs/` on the primary.
    pub logs_owner: Option<String>,
    /// The host's path in object storage (`objstore::host_path`: its `http_prefix`, else its name).
    pub object_path: String,
}

/// What a push did for one host.
#[derive(Clone, Debug, Default)]
pub struct HostPushed {
    pub generation: u64,
    pub files: usize,
    pub bytes: u64,
    pub changed: bool,
}

/// `user:group` of a file on the primary, by name (the mirror role has the same names, not
/// necessarily the same numbers).
pub fn owner_names(p: &Path) -> Result<String, String> {
    use nix::unistd::{Gid, Group, Uid, User};
    use std::os::unix::fs::MetadataExt;
    let md = fs::symlink_metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let user = User::from_uid(Uid::from_raw(md.uid()))
        .ok()
        .flatten()
        .map(|u| u.name)
        .ok_or_else(|| format!("{}: owner uid {} has no name here", p.display(), md.uid()))?;
    let group = Group::from_gid(Gid::from_raw(md.gid()))
        .ok()
        .flatten()
        .map(|g| g.name)
        .ok_or_else(|| format!("{}: group gid {} has no name here", p.display(), md.gid()))?;
    Ok(format!("{user}:{group}"))
}
