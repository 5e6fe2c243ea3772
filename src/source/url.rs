//! The `source` setting, parsed once when agent.toml loads (with the `url` crate): a
//! `file:///path`, an `sftp://user@host:port/` or an `http(s)://host/path/`, never a string
//! checked again per cycle.

use super::SourceError;
use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;

/// A parsed `source` setting.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum SourceUrl {
    /// `file:///path`: the host's publication directory on a local disk.
    File(PathBuf),
    /// `sftp://user@host:port/`: the host's chroot on the server. `host` is a name or an address
    /// (an IPv6 one without its brackets); `port` is 22 when the URL names none.
    Sftp {
        user: String,
        host: String,
        port: u16,
    },
    /// `https://host/path/` (or `http://`): the host's publication on a web server, read-only.
    /// The path always ends in `/` (added when the setting lacks it): it is a directory.
    Http(::url::Url),
}

/// What an sftp:// source looks like, for error messages.
const SFTP_FORM: &str = "sftp://USER@HOST:PORT/";

impl SourceUrl {
    /// Parses a `source` value; the error names the value and what is wrong with it.
    pub fn parse(s: &str) -> Result<Self, SourceError> {
        let bad = |why: String| SourceError::BadUrl {
            url: s.to_string(),
            why,
        };
        let url = ::url::Url::parse(s).map_err(|e| {
            bad(match e {
                ::url::ParseError::EmptyHost => format!("no host: {SFTP_FORM}"),
                ::url::ParseError::InvalidPort => "bad port: not a number from 1 to 65535".into(),
                e => format!("not a URL: {e}"),
            })
        })?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("a source has no ?query or #fragment".into()));
        }
        match url.scheme() {
            "file" => file_path(&url).map(SourceUrl::File).map_err(bad),
            "sftp" => sftp_parts(s, &url).map_err(bad),
            "http" | "https" => super::http_client::base_url(url)
                .map(SourceUrl::Http)
                .map_err(bad),
            other => Err(bad(format!(
                "scheme {other:?}: expected {SFTP_FORM}, https://HOST/PATH/ or file:///path"
            ))),
        }
    }

    /// Whether the source is on a server (and so needs a signed publication by default).
    pub fn is_sftp(&self) -> bool {
        matches!(self, SourceUrl::Sftp { .. })
    }

    /// Whether the source is an `http://` or `https://` web server (an untrusted transport).
    pub fn is_http(&self) -> bool {
        matches!(self, SourceUrl::Http(_))
    }
}

fn file_path(url: &::url::Url) -> Result<PathBuf, String> {
    if url.host_str().is_some_and(|h| !h.is_empty()) {
        return Err(format!(
            "a file source is on this machine, not on {:?}: write file:///srv/tiffin/HOST (three slashes)",
            url.host_str().unwrap_or_default()
        ));
    }
    if url.path().is_empty() || url.path() == "/" {
        return Err("a file source needs an absolute path: file:///srv/tiffin/HOST".into());
    }
    url.to_file_path()
        .map_err(|()| "a file source needs an absolute path: file:///srv/tiffin/HOST".into())
}

fn sftp_parts(raw: &str, url: &::url::Url) -> Result<SourceUrl, String> {
    let user = url.username();
    if user.is_empty() {
        let authority = raw["sftp://".len().min(raw.len())..]
            .split('/')
            .next()
            .unwrap_or("");
        return Err(if authority.contains('@') {
            format!("empty user name: {SFTP_FORM}")
        } else {
            format!("no user: {SFTP_FORM}")
        });
    }
    if !user
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(format!(
            "user {user:?} may hold only letters, digits, '.', '_' and '-'"
        ));
    }
    if url.password().is_some() {
        return Err("no password in the URL: the agent logs in with its key (`identity`)".into());
    }
    let host = match url.host() {
        Some(::url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
        Some(::url::Host::Ipv4(a)) => a.to_string(),
        Some(::url::Host::Ipv6(a)) => a.to_string(),
        _ => return Err(format!("no host: {SFTP_FORM}")),
    };
    if !matches!(url.path(), "" | "/") {
        return Err(format!(
            "path {:?}: the host's chroot is its root, so an sftp:// source ends in the port and `/`",
            url.path()
        ));
    }
    let port = url.port().unwrap_or(22);
    if port == 0 {
        return Err("bad port: not a number from 1 to 65535".into());
    }
    Ok(SourceUrl::Sftp {
        user: user.to_string(),
        host,
        port,
    })
}

impl TryFrom<String> for SourceUrl {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        SourceUrl::parse(&s).map_err(|e| e.to_string())
    }
}

impl fmt::Display for SourceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceUrl::File(p) => write!(f, "file://{}", p.display()),
            SourceUrl::Sftp { user, host, port } if host.contains(':') => {
                write!(f, "sftp://{user}@[{host}]:{port}/")
            }
            SourceUrl::Sftp { user, host, port } => write!(f, "sftp://{user}@{host}:{port}/"),
            SourceUrl::Http(u) => f.write_str(u.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sftp(user: &str, host: &str, port: u16) -> SourceUrl {
        SourceUrl::Sftp {
            user: user.into(),
            host: host.into(),
            port,
        }
    }

    #[test]
    fn parses_sftp_urls_with_defaults() {
        for (s, want) in [
            (
                "sftp://laptop@fleet.example.org:2222/",
                sftp("laptop", "fleet.example.org", 2222),
            ),
            ("sftp://a@fleet", sftp("a", "fleet", 22)),
            ("sftp://a@127.0.0.1:2200/", sftp("a", "127.0.0.1", 2200)),
            ("sftp://u@[::1]:2222/", sftp("u", "::1", 2222)),
            ("sftp://a@[::1]", sftp("a", "::1", 22)),
            ("sftp://a@[fd00::5]:2200/", sftp("a", "fd00::5", 2200)),
        ] {
            assert_eq!(SourceUrl::parse(s).unwrap(), want, "{s}");
        }
    }

    #[test]
    fn parses_file_urls() {
        assert_eq!(
            SourceUrl::parse("file:///srv/tiffin/a").unwrap(),
            SourceUrl::File("/srv/tiffin/a".into())
        );
        assert_eq!(
            SourceUrl::parse("file:///srv/a%20b").unwrap(),
            SourceUrl::File("/srv/a b".into())
        );
    }

    #[test]
    fn rejects_malformed_urls_with_the_reason() {
        for (u, why) in [
            ("sftp://@x", "empty user name"),
            ("sftp://@x:22/", "empty user name"),
            ("sftp://host:22/", "no user"),
            ("sftp://a@/", "no host"),
            ("sftp://a@:22/", "no host"),
            ("sftp://a@h:port/", "bad port"),
            ("sftp://a@h:99999/", "bad port"),
            ("sftp://a@h:0/", "bad port"),
            ("sftp://a@h:22/srv/x", "path \"/srv/x\""),
            ("sftp://a@h:22/?x=1", "query"),
            ("sftp://a:secret@h/", "password"),
            ("sftp://a b@h/", "user"),
            ("sftp://a@[::1/", "not a URL"),
            ("sftp://a@fe80::1:22/", "bad port"),
            ("file://relative", "three slashes"),
            ("file:///", "absolute path"),
            ("gopher://x/", "expected sftp://USER@HOST:PORT/"),
            ("https://x/p/?a=1", "query"),
            ("https://u:pw@x/p/", "user or password"),
            ("/srv/tiffin", "not a URL"),
            ("", "not a URL"),
        ] {
            let e = SourceUrl::parse(u).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(&format!("{u:?}")), "{u}: {e}");
        }
    }

    #[test]
    fn http_urls_are_directories() {
        for (s, want) in [
            (
                "https://cdn.example.org/fleet/abc",
                "https://cdn.example.org/fleet/abc/",
            ),
            ("https://cdn.example.org", "https://cdn.example.org/"),
            ("http://127.0.0.1:8080/p/", "http://127.0.0.1:8080/p/"),
        ] {
            let u = SourceUrl::parse(s).unwrap();
            assert!(u.is_http() && !u.is_sftp(), "{s}");
            assert_eq!(u.to_string(), want, "{s}");
        }
    }

    #[test]
    fn display_reads_back_as_the_same_source() {
        for s in [
            "sftp://laptop@fleet.example.org:2222/",
            "sftp://u@[::1]:2222/",
            "sftp://a@10.0.0.1",
            "file:///srv/tiffin/a",
            "https://cdn.example.org/fleet/abc/",
            "http://127.0.0.1:8080/p/",
        ] {
            let u = SourceUrl::parse(s).unwrap();
            assert_eq!(SourceUrl::parse(&u.to_string()).unwrap(), u, "{s} → {u}");
        }
        assert_eq!(
            SourceUrl::parse("sftp://u@[::1]:2222/")
                .unwrap()
                .to_string(),
            "sftp://u@[::1]:2222/"
        );
    }
}
