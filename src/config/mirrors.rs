//! fleet.toml `[[mirrors]]`: the servers `fleet publish` copies every host's publication to
//! after the primary (docs/configuration.md#mirrors). Parsed and checked here; the push is
//! `fleet::mirror`.

use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// One `[[mirrors]]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// `sftp://root@host:port/srv/tiffin`, `rsync+ssh://root@host:port/srv/tiffin` (the
    /// mirror's chroot root) or `s3://bucket/prefix`.
    pub url: String,
    /// The publisher's private key, which logs in as the URL's user (root) on the mirror;
    /// relative to the fleet repository or absolute. Required for sftp:// and rsync+ssh://.
    #[serde(default)]
    pub identity: Option<PathBuf>,
    /// The mirror's pinned host key (an OpenSSH known_hosts file), relative to the fleet
    /// repository or absolute. Required for sftp:// and rsync+ssh://.
    #[serde(default)]
    pub known_hosts: Option<PathBuf>,
}

/// How a mirror is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MirrorUrl {
    /// `sftp://user@host:port/root`: files over SFTP, the switch of `current` by `mv -T`.
    Sftp(SshMirror),
    /// `rsync+ssh://user@host:port/root`: the rsync program over ssh.
    RsyncSsh(SshMirror),
    /// `s3://bucket/prefix`: object storage (the `fleet::objstore` module).
    S3 { bucket: String, prefix: String },
}

/// Where on an SSH mirror, as whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshMirror {
    pub user: String,
    pub host: String,
    pub port: u16,
    /// The mirror's chroot root, a plain absolute path like fleet.toml's `chroot`.
    pub root: PathBuf,
}

impl MirrorUrl {
    /// Parses a `[[mirrors]] url`, saying what is wrong with it.
    pub fn parse(s: &str) -> Result<Self, String> {
        let url = ::url::Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
        // The URL parser resolves `.` and `..`; a chroot root never has them.
        if s.split('/').skip(3).any(|c| c == "." || c == "..") {
            return Err(format!(
                "{s:?}: the mirror's chroot root may not contain '.' or '..'"
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("{s:?}: no query or fragment allowed"));
        }
        match url.scheme() {
            "sftp" => ssh_parts(&url).map(MirrorUrl::Sftp),
            "rsync+ssh" => ssh_parts(&url).map(MirrorUrl::RsyncSsh),
            "s3" => {
                let bucket = url.host_str().unwrap_or_default().to_string();
                if bucket.is_empty() {
                    return Err(format!(
                        "{s:?}: an s3:// URL names a bucket: s3://bucket/prefix"
                    ));
                }
                let prefix = url.path().trim_matches('/').to_string();
                Ok(MirrorUrl::S3 { bucket, prefix })
            }
            other => Err(format!(
                "{s:?}: unknown scheme {other:?}; a mirror is sftp://, rsync+ssh:// or s3://"
            )),
        }
    }

    /// The SSH part, for sftp:// and rsync+ssh://.
    pub fn ssh(&self) -> Option<&SshMirror> {
        match self {
            MirrorUrl::Sftp(m) | MirrorUrl::RsyncSsh(m) => Some(m),
            MirrorUrl::S3 { .. } => None,
        }
    }
}

fn ssh_parts(url: &::url::Url) -> Result<SshMirror, String> {
    let user = url.username();
    if user.is_empty() {
        return Err(format!(
            "{url}: name the user the push logs in as (root on the mirror): {}://root@host:22/srv/tiffin",
            url.scheme()
        ));
    }
    if url.password().is_some() {
        return Err(format!(
            "{url}: no password in the URL; the push logs in with `identity`"
        ));
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("{url}: no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let path = percent_encoding_free(url.path())?;
    let root = PathBuf::from(path);
    check_chroot(&root).map_err(|why| format!("{url}: the mirror's chroot root {why}"))?;
    Ok(SshMirror {
        user: user.to_string(),
        host,
        port: url.port().unwrap_or(22),
        root,
    })
}

/// A plain absolute path, as fleet.toml's `chroot` must be (the same rule as
/// `config::fleet::check_chroot`): it reaches sshd's configuration and the push's commands.
fn check_chroot(p: &Path) -> Result<(), String> {
    let text = p.to_str().ok_or("is not UTF-8")?;
    let rest = text.strip_prefix('/').ok_or("must be an absolute path")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let plain = |c: &str| {
        !c.is_empty()
            && c != "."
            && c != ".."
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._+@-".contains(&b))
    };
    if rest.is_empty() || !rest.split('/').all(plain) {
        return Err("must be an absolute path of plain components (letters, digits, '._+@-'; no '.' or '..'), e.g. \"/srv/tiffin\"".into());
    }
    Ok(())
}

/// The URL's path, refused when it was percent-encoded (a chroot root is plain text).
fn percent_encoding_free(path: &str) -> Result<&str, String> {
    if path.contains('%') {
        return Err(format!("the path {path:?} may not be percent-encoded"));
    }
    Ok(path)
}

impl fmt::Display for MirrorUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ssh = |f: &mut fmt::Formatter<'_>, scheme: &str, m: &SshMirror| {
            let host = if m.host.contains(':') {
                format!("[{}]", m.host)
            } else {
                m.host.clone()
            };
            write!(
                f,
                "{scheme}://{}@{host}:{}{}",
                m.user,
                m.port,
                m.root.display()
            )
        };
        match self {
            MirrorUrl::Sftp(m) => ssh(f, "sftp", m),
            MirrorUrl::RsyncSsh(m) => ssh(f, "rsync+ssh", m),
            MirrorUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

impl MirrorConfig {
    /// The parsed URL (checked when fleet.toml loads, so this only fails on a config built by
    /// hand).
    pub fn parsed(&self) -> Result<MirrorUrl, String> {
        MirrorUrl::parse(&self.url)
    }

    /// `identity` and `known_hosts` as paths on this machine.
    pub fn keys(&self, fleet_dir: &Path) -> Option<(PathBuf, PathBuf)> {
        Some((
            fleet_dir.join(self.identity.as_ref()?),
            fleet_dir.join(self.known_hosts.as_ref()?),
        ))
    }
}

/// Checks every `[[mirrors]]` entry; `at` places a needle in the file ("FILE:LINE:COL").
pub fn check(
    mirrors: &[MirrorConfig],
    chroot: &Path,
    at: &dyn Fn(&str) -> String,
) -> Result<(), String> {
    let mut seen = Vec::new();
    for m in mirrors {
        let here = at(&m.url);
        let url = MirrorUrl::parse(&m.url).map_err(|why| format!("{here}: mirrors: url {why}"))?;
        if seen.contains(&url) {
            return Err(format!("{here}: mirrors: {} is listed twice", m.url));
        }
        if let Some(ssh) = url.ssh() {
            for (key, value) in [("identity", &m.identity), ("known_hosts", &m.known_hosts)] {
                match value {
                    None => {
                        return Err(format!(
                            "{here}: mirrors: {} needs `{key}` (the push logs in with the publisher's key and checks the mirror's pinned host key)",
                            m.url
                        ))
                    }
                    Some(p) if p.as_os_str().is_empty() => {
                        return Err(format!("{here}: mirrors: {}: `{key}` is empty", m.url))
                    }
                    Some(_) => {}
                }
            }
            let local = matches!(ssh.host.as_str(), "localhost" | "127.0.0.1" | "::1");
            if local && ssh.root == chroot {
                return Err(format!(
                    "{here}: mirrors: {} is this server's own chroot root",
                    m.url
                ));
            }
        } else if m.identity.is_some() || m.known_hosts.is_some() {
            return Err(format!(
                "{here}: mirrors: {}: `identity` and `known_hosts` are for sftp:// and rsync+ssh:// mirrors",
                m.url
            ));
        }
        seen.push(url);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_kinds() {
        let m = MirrorUrl::parse("sftp://root@mirror.example.org:2222/srv/tiffin").unwrap();
        assert_eq!(
            m,
            MirrorUrl::Sftp(SshMirror {
                user: "root".into(),
                host: "mirror.example.org".into(),
                port: 2222,
                root: "/srv/tiffin".into()
            })
        );
        assert_eq!(
            m.to_string(),
            "sftp://root@mirror.example.org:2222/srv/tiffin"
        );
        let r = MirrorUrl::parse("rsync+ssh://root@m/srv/t").unwrap();
        assert_eq!(r.ssh().unwrap().port, 22);
        assert!(matches!(r, MirrorUrl::RsyncSsh(_)));
        assert_eq!(
            MirrorUrl::parse("s3://bucket/a/b").unwrap(),
            MirrorUrl::S3 {
                bucket: "bucket".into(),
                prefix: "a/b".into()
            }
        );
    }

    #[test]
    fn refuses_what_it_cannot_push_to_with_the_reason() {
        for (url, why) in [
            ("http://m/srv", "unknown scheme"),
            ("sftp://m/srv/tiffin", "name the user"),
            ("sftp://root:pw@m/srv/tiffin", "no password"),
            ("sftp://root@m/", "chroot root"),
            ("sftp://root@m/srv/../etc", "chroot root"),
            ("sftp://root@m/srv/a%20b", "percent-encoded"),
            ("s3:///x", "names a bucket"),
        ] {
            let e = MirrorUrl::parse(url).unwrap_err();
            assert!(e.contains(why), "{url}: {e}");
        }
    }

    #[test]
    fn fleet_toml_mirrors_are_checked_with_the_place_and_the_key() {
        use crate::config::FleetConfig;
        let base = "chroot = \"/srv/tiffin\"\n";
        let ok = format!(
            "{base}[[mirrors]]\nurl = \"sftp://root@m:22/srv/tiffin\"\nidentity = \"keys/m\"\nknown_hosts = \"keys/kh\"\n\n[[mirrors]]\nurl = \"s3://b/p\"\n"
        );
        let c = FleetConfig::parse(&ok, "fleet.toml").unwrap();
        assert_eq!(c.mirrors.len(), 2);
        for (text, why) in [
            (
                format!("{base}[[mirrors]]\nurl = \"sftp://root@m/srv/x\"\nidentity = \"k\"\n"),
                "fleet.toml:3:8: mirrors: sftp://root@m/srv/x needs `known_hosts`",
            ),
            (
                format!("{base}[[mirrors]]\nurl = \"ftp://m/x\"\n"),
                "fleet.toml:3:8: mirrors: url \"ftp://m/x\": unknown scheme",
            ),
            (
                format!("{base}[[mirrors]]\nurl = \"s3://b/p\"\nidentity = \"k\"\n"),
                "are for sftp:// and rsync+ssh:// mirrors",
            ),
            (
                format!("{base}[[mirrors]]\nurl = \"sftp://root@127.0.0.1/srv/tiffin\"\nidentity = \"k\"\nknown_hosts = \"h\"\n"),
                "this server's own chroot root",
            ),
            (
                format!("{base}[[mirrors]]\nurl = \"sftp://root@m/srv/x\"\nhost = \"k\"\n"),
                "unknown field `host`",
            ),
        ] {
            let e = FleetConfig::parse(&text, "fleet.toml").unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
    }
}
