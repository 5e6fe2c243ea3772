//! Who may do what on the socket: the peer's credentials, the permission each command needs
//! (docs: the socket protocol), and the group lookups that grant it.

use super::ServerError;
use crate::ipc::protocol::Command;
use nix::unistd::{Gid, Group, Uid, User};
use std::ffi::CString;

/// The credentials of a connected client, from `SO_PEERCRED`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

/// What a command needs from its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    /// Anyone who could connect (the socket's mode is the gate).
    Connected,
    /// Members of the socket group, and root.
    Member,
    /// Members of the admin group, and root.
    Admin,
}

/// The permission each command needs (docs/protocol.md).
pub fn permission_of(cmd: Command) -> Permission {
    match cmd {
        Command::Status | Command::Subscribe | Command::Log => Permission::Connected,
        Command::Backup | Command::Snapshots => Permission::Member,
        Command::Check | Command::Update | Command::Postpone => Permission::Member,
        Command::Rollback => Permission::Admin,
    }
}

/// The groups that grant permissions, resolved once at startup.
#[derive(Clone, Debug)]
pub struct AccessPolicy {
    pub socket_group: String,
    pub socket_gid: Option<Gid>,
    pub admin_group: String,
    pub admin_gid: Option<Gid>,
}

impl AccessPolicy {
    /// Looks the groups up. A missing socket group is an error for an agent running as root
    /// (it could not give the socket to the right people); otherwise a warning.
    pub fn resolve(socket_group: &str, admin_group: &str) -> Result<Self, ServerError> {
        let lookup = |name: &str| Group::from_name(name).ok().flatten().map(|g| g.gid);
        let socket_gid = lookup(socket_group);
        if socket_gid.is_none() {
            if Uid::effective().is_root() {
                return Err(ServerError::NoSocketGroup {
                    group: socket_group.into(),
                });
            }
            tracing::warn!(
                group = socket_group,
                "socket group does not exist; not running as root, so the socket keeps its owner's group"
            );
        }
        let admin_gid = lookup(admin_group);
        if admin_gid.is_none() {
            tracing::warn!(
                group = admin_group,
                "admin group does not exist; only root may roll back"
            );
        }
        Ok(Self {
            socket_group: socket_group.into(),
            socket_gid,
            admin_group: admin_group.into(),
            admin_gid,
        })
    }

    /// Whether `peer` may do what needs `need`.
    pub fn allows(&self, peer: &Peer, need: Permission) -> bool {
        if peer.uid == 0 {
            return true;
        }
        match need {
            Permission::Connected => true,
            Permission::Member => is_member(peer, self.socket_gid),
            Permission::Admin => is_member(peer, self.admin_gid),
        }
    }

    pub(super) fn refusal(&self, cmd: Command) -> String {
        let group = match permission_of(cmd) {
            Permission::Admin => &self.admin_group,
            _ => &self.socket_group,
        };
        format!(
            "`{}` needs membership in group {group:?} (or root)",
            serde_json::to_value(cmd)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        )
    }
}

/// Membership by the peer's primary gid or, through the group database, by its user's
/// supplementary groups (`SO_PEERCRED` carries only the primary gid).
fn is_member(peer: &Peer, group: Option<Gid>) -> bool {
    let Some(group) = group else { return false };
    if peer.gid == group.as_raw() {
        return true;
    }
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(peer.uid)) else {
        return false;
    };
    let Ok(name) = CString::new(user.name) else {
        return false;
    };
    nix::unistd::getgrouplist(&name, Gid::from_raw(peer.gid))
        .map(|groups| groups.contains(&group))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_follow_the_design() {
        let access = AccessPolicy {
            socket_group: "users".into(),
            socket_gid: Some(Gid::from_raw(4242)),
            admin_group: "wheel".into(),
            admin_gid: Some(Gid::from_raw(4243)),
        };
        // A uid that exists nowhere: only its primary gid counts.
        let member = Peer {
            uid: 4_000_000_001,
            gid: 4242,
            pid: None,
        };
        let admin = Peer {
            gid: 4243,
            ..member
        };
        let root = Peer {
            uid: 0,
            gid: 0,
            pid: None,
        };
        assert!(access.allows(&member, permission_of(Command::Update)));
        assert!(!access.allows(&member, permission_of(Command::Rollback)));
        assert!(access.allows(&admin, permission_of(Command::Rollback)));
        assert!(!access.allows(&admin, permission_of(Command::Check)));
        assert!(access.allows(&root, permission_of(Command::Rollback)));
        assert!(access.refusal(Command::Rollback).contains("\"wheel\""));
    }

    #[test]
    fn backups_are_for_socket_group_members_and_root_only() {
        for cmd in [Command::Backup, Command::Snapshots] {
            assert_eq!(permission_of(cmd), Permission::Member, "{cmd:?}");
        }
    }
}
