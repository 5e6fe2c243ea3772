//! The keys of an http(s):// source and of the web layout: agent.toml `http_ca` (and that an
//! http(s) source comes with `trusted_key`), fleet.toml `[http] root` and `[hosts.X] http_prefix`.

use super::{AgentConfig, FleetConfig};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// fleet.toml `[http]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// The directory a web server serves: publish keeps `<root>/<http_prefix>/current.txt` and
    /// `<root>/<http_prefix>/gens` there, links into each host's publication, and nothing else.
    pub root: PathBuf,
}

/// fleet.toml: `[http] root` is absolute and outside the chroot root; every `http_prefix` is
/// valid and used by one host only. `at` names the line of a key.
pub fn check_fleet(c: &FleetConfig, at: &dyn Fn(&str) -> String) -> Result<(), String> {
    if let Some(h) = &c.http {
        check_root(&h.root).map_err(|why| format!("{}: [http] root: {why}", at("root")))?;
        if h.root.starts_with(&c.chroot) || c.chroot.starts_with(&h.root) {
            return Err(format!(
                "{}: [http] root {:?} overlaps chroot {:?}: a web server must see only the links publish makes, never logs/ or backup/",
                at("root"),
                h.root.display().to_string(),
                c.chroot.display().to_string()
            ));
        }
    }
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, h) in &c.hosts {
        let Some(p) = &h.http_prefix else { continue };
        let here = at(p);
        check_prefix(p).map_err(|why| format!("{here}: host {name:?}: http_prefix: {why}"))?;
        if let Some(other) = seen.insert(p, name) {
            return Err(format!(
                "{here}: host {name:?}: http_prefix is already host {other:?}'s; each host needs its own"
            ));
        }
    }
    Ok(())
}

/// agent.toml: `http_ca` is an absolute path; an http(s) source needs `trusted_key`, since a web
/// server is an untrusted transport (`allow_unsigned` applies to a pinned sftp:// server only).
pub fn check_agent(c: &AgentConfig) -> Result<(), String> {
    if let Some(ca) = &c.http_ca {
        if !ca.is_absolute() {
            return Err(format!(
                "http_ca: {:?} must be an absolute path (a PEM file, e.g. /etc/tiffin/fleet-ca.pem)",
                ca.display().to_string()
            ));
        }
    }
    if c.source.is_http() && c.trusted_key.is_empty() {
        return Err(format!(
            "source: {} is a web server, an untrusted transport: set trusted_key (the fleet's public key); unsigned publications are accepted only from a pinned sftp:// server",
            c.source
        ));
    }
    if c.source.is_http() && c.backup.is_some() {
        return Err(format!(
            "[backup]: needs an sftp:// source (the host's chroot takes the repository); {} is a read-only web server",
            c.source
        ));
    }
    Ok(())
}

/// The shortest `http_prefix`: 22 characters of 64 kinds are 132 bits, not guessable.
pub const MIN_PREFIX_LEN: usize = 22;

/// fleet.toml `[hosts.X] http_prefix`: at least [`MIN_PREFIX_LEN`] characters of
/// `[A-Za-z0-9_-]`, so that it is one path segment nobody guesses.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.len() < MIN_PREFIX_LEN {
        return Err(format!(
            "{prefix:?} is {} characters; an http_prefix is the only thing keeping the host's publication from strangers on a web server, so it needs at least {MIN_PREFIX_LEN} random ones (e.g. `head -c 18 /dev/urandom | base64 | tr +/ -_`)",
            prefix.len()
        ));
    }
    if let Some(c) = prefix
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "{prefix:?} holds {c:?}; an http_prefix is letters, digits, '_' and '-'"
        ));
    }
    Ok(())
}

/// fleet.toml `[http] root`: an absolute path.
pub fn check_root(root: &Path) -> Result<(), String> {
    if !root.is_absolute() {
        return Err(format!(
            "{:?} must be an absolute path (the directory the web server serves, e.g. /srv/tiffin-web)",
            root.display().to_string()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_is_long_and_url_safe() {
        check_prefix("Zm9vYmFyYmF6cXV4LWZvb2Jh").unwrap();
        check_prefix("abcdefghijklmnopqrstu_-").unwrap();
        for (p, why) in [
            ("short", "at least 22"),
            ("abcdefghijklmnopqrstuv/", "'/'"),
            ("abcdefghijklmnopqrstuv.", "'.'"),
            ("abcdefghijklmnopqrstu%2F", "'%'"),
        ] {
            let e = check_prefix(p).unwrap_err();
            assert!(e.contains(why), "{p}: {e}");
        }
    }

    #[test]
    fn an_http_source_needs_a_trusted_key_and_an_absolute_ca() {
        let base = "host = \"a\"\nsource = \"https://cdn.example.org/p/\"\n";
        let e = AgentConfig::parse(base, "agent.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("agent.toml: source: ") && e.contains("trusted_key"),
            "{e}"
        );
        let e = AgentConfig::parse(
            &format!(
                "{base}trusted_key = \"/k.pub\"\nallow_unsigned = true\nhttp_ca = \"ca.pem\"\n"
            ),
            "agent.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("http_ca") && e.contains("absolute"), "{e}");
        let c = AgentConfig::parse(
            &format!("{base}trusted_key = \"/k.pub\"\nhttp_ca = \"/etc/tiffin/ca.pem\"\n"),
            "agent.toml",
        )
        .unwrap();
        assert!(c.source.is_http());
    }
}
