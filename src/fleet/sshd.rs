//! `tiffin fleet sshd-config`: the sshd `Match` block per host and the user setup for a
//! non-NixOS server (the contract in README, "How it is tested" and the NixOS server module).

use super::users::{setup_commands, AUTHORIZED_KEYS_DIR};
use crate::config::FleetConfig;
use std::fmt::Write as _;

/// The `Match` block that confines one host's user to sftp inside its chroot.
pub fn match_block(config: &FleetConfig, host: &str, user: &str) -> String {
    let chroot = config.chroot.join(host);
    format!(
        "Match User {user}
    ChrootDirectory {chroot}
    ForceCommand internal-sftp
    AuthorizedKeysFile {AUTHORIZED_KEYS_DIR}/%u
    AuthenticationMethods publickey
    PasswordAuthentication no
    KbdInteractiveAuthentication no
    DisableForwarding yes
    AllowTcpForwarding no
    AllowAgentForwarding no
    AllowStreamLocalForwarding no
    PermitTunnel no
    X11Forwarding no
    PermitTTY no
",
        chroot = chroot.display()
    )
}

/// Ends the host blocks: whatever follows in sshd_config (another tool's or module's settings)
/// applies to everyone again instead of landing inside the last host's block.
pub const CLOSE_MATCH: &str = "Match All\n";

/// The whole text `fleet sshd-config` prints: the sshd_config lines, then the shell commands that
/// create the users (the same commands `publish` prints when a user is missing).
pub fn sshd_config(config: &FleetConfig) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# ---- 1. sshd_config: append to /etc/ssh/sshd_config (Match blocks go after every global\n\
         # setting), check with `sshd -t`, reload sshd. Every component of {} must be owned by\n\
         # root and writable by no one else, or sshd refuses the chroot. Inside each host's chroot\n\
         # only logs/ (its reports) and backup/ (its restic repository) are its own to write;\n\
         # sshd cannot limit their size (no quota).",
        config.chroot.display()
    );
    for (host, hc) in &config.hosts {
        s.push('\n');
        s.push_str(&match_block(config, host, hc.user_or_default(host)));
    }
    s.push_str("# Closes the tiffin blocks: settings after this line apply to every user again.\n");
    s.push_str(CLOSE_MATCH);
    let hosts: Vec<String> = config.hosts.keys().cloned().collect();
    let _ = write!(
        s,
        "\n# ---- 2. shell, as root, on a non-NixOS server: the group, the users and their keys\n{}",
        setup_commands(config, &hosts)
    );
    s
}
