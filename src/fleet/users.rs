//! The hosts' system users on the server, who owns what in a publication (docs/publication.md), and the
//! commands that create the users on a non-NixOS server.

use crate::config::{FleetConfig, HostConfig};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

/// The group every host user is in (the sshd contract shared with the NixOS server module).
pub const HOST_GROUP: &str = "tiffin";
/// Where sshd finds each host user's public key (`AuthorizedKeysFile …/%u`).
pub const AUTHORIZED_KEYS_DIR: &str = "/etc/ssh/tiffin/authorized_keys";
/// The login shell of a host user: sftp only.
pub const NOLOGIN_SHELL: &str = "/usr/sbin/nologin";

/// Who the files of a publication belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// Running as root: the tree is root:`gid`, `logs/` is `uid`:`gid` (docs/publication.md).
    Host { uid: u32, gid: u32 },
    /// Not root (a developer machine): everything stays owned by the publisher; modes still apply.
    Publisher,
}

impl Ownership {
    /// The (uid, gid) of the generation's tree, or `None` when nothing is chowned.
    pub fn tree(self) -> Option<(u32, u32)> {
        match self {
            Ownership::Host { gid, .. } => Some((0, gid)),
            Ownership::Publisher => None,
        }
    }
    /// The (uid, gid) of `logs/`.
    pub fn logs(self) -> Option<(u32, u32)> {
        match self {
            Ownership::Host { uid, gid } => Some((uid, gid)),
            Ownership::Publisher => None,
        }
    }
    /// The (uid, gid) of the chroot and `gens/`.
    pub fn root(self) -> Option<(u32, u32)> {
        match self {
            Ownership::Host { .. } => Some((0, 0)),
            Ownership::Publisher => None,
        }
    }
}

/// A host's system user is missing while running as root.
#[derive(Debug, thiserror::Error)]
#[error(
    "system user {user:?} of host {host} does not exist; create it (as root) with:\n{commands}"
)]
pub struct MissingUser {
    pub host: String,
    pub user: String,
    pub commands: String,
}

/// A host's user shares its primary group with another host's user (or has the shared `tiffin`
/// group as its primary group): the publication's files are readable by that group, so the other
/// host could read this one's configuration.
#[derive(Clone, Debug, thiserror::Error)]
#[error("host {host}: system user {user:?} has primary group {group} (gid {gid}), {why}; each host's user needs a primary group of its own, which alone may read its publication (`tiffin fleet sshd-config` shows the commands: useradd --user-group); nothing published for this host")]
pub struct SharedGroup {
    pub host: String,
    pub user: String,
    pub group: String,
    pub gid: u32,
    pub why: String,
}

/// For every host of fleet.toml whose user exists and whose primary group is not its own, why
/// not. One user lookup per host (a run checks each host against all the others).
pub fn shared_primary_groups(config: &FleetConfig) -> HashMap<String, SharedGroup> {
    let host_group = nix::unistd::Group::from_name(HOST_GROUP)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw());
    let mut by_gid: HashMap<u32, Vec<(&str, &str)>> = HashMap::new();
    for (host, hc) in &config.hosts {
        let user = hc.user_or_default(host);
        if let Ok(Some(u)) = nix::unistd::User::from_name(user) {
            by_gid.entry(u.gid.as_raw()).or_default().push((host, user));
        }
    }
    let mut out = HashMap::new();
    for (gid, members) in &by_gid {
        for (host, user) in members {
            let others: Vec<String> = members
                .iter()
                .filter(|(h, _)| h != host)
                .map(|(h, u)| format!("{u:?} (host {h})"))
                .collect();
            let why = if Some(*gid) == host_group {
                format!("the group every host user is in ({HOST_GROUP})")
            } else if !others.is_empty() {
                format!("shared with the user(s) {}", others.join(", "))
            } else {
                continue;
            };
            let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(*gid))
                .ok()
                .flatten()
                .map_or_else(|| gid.to_string(), |g| g.name);
            out.insert(
                host.to_string(),
                SharedGroup {
                    host: host.to_string(),
                    user: user.to_string(),
                    group,
                    gid: *gid,
                    why,
                },
            );
        }
    }
    out
}

/// How a host's user resolved.
#[derive(Debug)]
pub enum UserCheck {
    Found(Ownership),
    /// Not root and the user is missing: publish as the current user, warn.
    MissingUnprivileged,
}

/// True when this process may chown (effective uid 0).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Looks up a host's user and decides the ownership of its publication.
pub fn resolve_ownership(
    config: &FleetConfig,
    host: &str,
    hc: &HostConfig,
) -> Result<UserCheck, MissingUser> {
    let user = hc.user_or_default(host);
    let found = nix::unistd::User::from_name(user).ok().flatten();
    match (is_root(), found) {
        (true, Some(u)) => Ok(UserCheck::Found(Ownership::Host {
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        })),
        (true, None) => Err(MissingUser {
            host: host.to_string(),
            user: user.to_string(),
            commands: setup_commands(config, &[host.to_string()]),
        }),
        (false, Some(_)) => Ok(UserCheck::Found(Ownership::Publisher)),
        (false, None) => Ok(UserCheck::MissingUnprivileged),
    }
}

/// Shell commands that create the host group, each named host's user (password field `*`: a
/// locked `!` is refused by sshd under `UsePAM no`) with a primary group of its own (which alone
/// may read its publication) and its authorized_keys file. A user that already exists keeps
/// its groups; `publish` refuses it when its primary group is shared.
pub fn setup_commands(config: &FleetConfig, hosts: &[String]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "getent group {HOST_GROUP} >/dev/null || groupadd --system {HOST_GROUP}"
    );
    let _ = writeln!(s, "install -d -m 0755 {AUTHORIZED_KEYS_DIR}");
    for host in hosts {
        let Some(hc) = config.hosts.get(host) else {
            continue;
        };
        let user = hc.user_or_default(host);
        let home = config.chroot.join(host);
        let _ = writeln!(
            s,
            "getent passwd {user} >/dev/null || useradd --system --user-group --groups {HOST_GROUP} --home-dir {} --no-create-home --shell {NOLOGIN_SHELL} --password '*' {user}",
            sh_quote_path(&home)
        );
        let keyfile = Path::new(AUTHORIZED_KEYS_DIR).join(user);
        let _ = writeln!(
            s,
            "printf '%s\\n' {} > {}",
            sh_quote(hc.key.trim()),
            keyfile.display()
        );
        let _ = writeln!(s, "chmod 0644 {}", keyfile.display());
    }
    s
}

/// Quotes a word for a POSIX shell.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:@,".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn sh_quote_path(p: &Path) -> String {
    sh_quote(&p.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_plain_words_and_escapes_quotes() {
        assert_eq!(sh_quote("/srv/tiffin/a"), "/srv/tiffin/a");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        assert_eq!(sh_quote(""), "''");
    }
}
