//! Commands the push runs on an SSH mirror as root (`sh -c` through the SSH session): the
//! host's directories with their owners, the hard-linked copy of a base generation, the owners
//! of a new generation, the switch of `current` with `mv -T` (OpenSSH's SFTP v3 cannot rename
//! over a file and libssh2 does not offer the posix-rename extension) and pruning. Only paths
//! made of the mirror's checked chroot root, a host name and generation numbers reach a command
//! line, always single-quoted; paths inside a host's tree go through SFTP.

use ssh2::Session;
use std::io::Read;
use std::time::Duration;

/// How long one remote command may run (a `cp -al` of a large generation).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(600);

/// A word for `sh`: single-quoted.
pub fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs `command` on the mirror; an exit status other than 0 is an error with its stderr.
pub fn run(session: &Session, place: &str, command: &str) -> Result<(), String> {
    let before = session.timeout();
    session.set_timeout(COMMAND_TIMEOUT.as_millis() as u32);
    let r = run_inner(session, command);
    session.set_timeout(before);
    r.map_err(|why| format!("{place}: `{command}`: {why}"))
}

fn run_inner(session: &Session, command: &str) -> Result<(), String> {
    let mut ch = session
        .channel_session()
        .map_err(|e| format!("cannot open a session channel: {}", e.message()))?;
    ch.exec(command)
        .map_err(|e| format!("cannot run it: {}", e.message()))?;
    let mut out = String::new();
    let _ = ch.read_to_string(&mut out);
    let mut err = String::new();
    let _ = ch.stderr().read_to_string(&mut err);
    ch.wait_close()
        .map_err(|e| format!("the channel did not close: {}", e.message()))?;
    let status = ch
        .exit_status()
        .map_err(|e| format!("no exit status: {}", e.message()))?;
    if status != 0 {
        let err = err.trim();
        return Err(format!(
            "exit status {status}{}",
            if err.is_empty() {
                String::new()
            } else {
                format!(": {}", err.chars().take(500).collect::<String>())
            }
        ));
    }
    Ok(())
}

/// The host's directories as the primary has them: root-owned `<root>` and `<root>/<host>` and
/// `gens/` (0755, which sshd's ChrootDirectory demands), `logs/` and `backup/` the host user's
/// (0700); half-pushed generations of an interrupted push removed.
pub fn skeleton(host_dir: &str, root: &str, host_owner: Option<&str>) -> String {
    let mut c = format!(
        "install -d -m 0755 -o root -g root {r} {h} {h}/gens && rm -rf {h}/gens/.incoming-*",
        r = q(root),
        h = q(host_dir)
    );
    if let Some(owner) = host_owner {
        let (user, group) = owner.split_once(':').unwrap_or((owner, owner));
        c.push_str(&format!(
            " && install -d -m 0700 -o {u} -g {g} {h}/logs {h}/backup",
            u = q(user),
            g = q(group),
            h = q(host_dir)
        ));
    }
    c
}

/// Starts generation `inc` as a hard-linked copy of `base`, or empty with `mode`.
pub fn start_generation(inc: &str, base: Option<&str>, mode: u32) -> String {
    match base {
        Some(b) => format!("rm -rf {i} && cp -al {b} {i}", i = q(inc), b = q(b)),
        None => format!("rm -rf {i} && mkdir -m {mode:o} {i}", i = q(inc)),
    }
}

/// Gives the finished generation its owners and mode, makes it durable and renames it in.
pub fn finish_generation(inc: &str, dst: &str, owner: &str, mode: u32) -> String {
    format!(
        "chown -R {o} {i} && chmod {mode:o} {i} && sync -f {i} && mv -T {i} {d}",
        o = q(owner),
        i = q(inc),
        d = q(dst)
    )
}

/// Points `current` at `gens/<generation>` in one rename; with `current_txt`, then renames the
/// uploaded `.current.txt.mirror` over `current.txt` with `owner`.
pub fn switch_current(host_dir: &str, generation: u64, current_txt: Option<&str>) -> String {
    let mut c = format!(
        "cd {h} && ln -sfn gens/{generation} .current.mirror && mv -T .current.mirror current",
        h = q(host_dir)
    );
    if let Some(owner) = current_txt {
        c.push_str(&format!(
            " && chown {o} .current.txt.mirror && mv -T .current.txt.mirror current.txt",
            o = q(owner)
        ));
    }
    c
}

/// Renames an uploaded file over `dst` with `dst`'s owners.
pub fn replace_file(tmp: &str, dst: &str) -> String {
    format!(
        "chown --reference={d} {t} && mv -T {t} {d}",
        t = q(tmp),
        d = q(dst)
    )
}

/// Removes generations the primary no longer has.
pub fn prune(gens_dir: &str, generations: &[u64]) -> String {
    let paths: Vec<String> = generations
        .iter()
        .map(|g| q(&format!("{gens_dir}/{g}")))
        .collect();
    format!("rm -rf {}", paths.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(q("a'b"), r"'a'\''b'");
        assert_eq!(
            switch_current("/srv/m/h", 4, None),
            "cd '/srv/m/h' && ln -sfn gens/4 .current.mirror && mv -T .current.mirror current"
        );
    }
}
