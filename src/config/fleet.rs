//! `fleet.toml` at the root of the admin's repository (docs/publication.md, §10).

use super::{line_col, toml_error};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The file name at the root of a fleet repository.
pub const FLEET_FILE: &str = "fleet.toml";

/// Where `fleet keygen` puts the signing key when fleet.toml names none.
pub const DEFAULT_SIGNING_KEY: &str = "keys/fleet-signing.key";

/// One host of the fleet.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// The host's SSH public key (`ssh-ed25519 AAAA… comment`).
    pub key: String,
    /// Source directory relative to the repo; default `hosts/<name>`.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Flake `nixosConfigurations` attribute; default the host's name.
    #[serde(default)]
    pub attr: Option<String>,
    /// Its system user on the server; default the host's name.
    #[serde(default)]
    pub user: Option<String>,
    /// What `fleet status` measures its `backup/` against (`"50G"`); sshd cannot enforce it.
    #[serde(default, deserialize_with = "super::backup::de_opt_size")]
    pub backup_quota: Option<u64>,
    /// The host's rollout wave (`fleet publish --staged` publishes to wave 0, `fleet rollout`
    /// to the next); default: the last wave of the fleet.
    #[serde(default)]
    pub wave: Option<u32>,
    /// The host's directory under `[http] root` (docs/serving.md): unguessable, at least 22
    /// characters of `[A-Za-z0-9_-]`; unset: the host is not served over HTTP.
    #[serde(default)]
    pub http_prefix: Option<String>,
}

/// The whole fleet file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    #[serde(default = "default_chroot")]
    pub chroot: PathBuf,
    #[serde(default)]
    pub server: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default = "default_keep")]
    pub keep_generations: usize,
    /// The admin's ed25519 signing key (`tiffin fleet keygen`), relative to the repository;
    /// unset: [`DEFAULT_SIGNING_KEY`] when that file exists, else publications are unsigned.
    #[serde(default)]
    pub signing_key: Option<PathBuf>,
    /// Paths of the repository that no host's tree may reach, even through a symlink (besides
    /// the signing key, `keys/` and `.git`, which are never published anyway).
    #[serde(default)]
    pub never_publish: Vec<PathBuf>,
    /// How `fleet build` and `publish --build` call Nix.
    #[serde(default)]
    pub build: BuildConfig,
    #[serde(default)]
    pub hosts: BTreeMap<String, HostConfig>,
    /// `[secrets]`: files/ sealed to each host's key (`seal`), and to whom else.
    #[serde(default)]
    pub secrets: super::secrets::SecretsConfig,
    /// How `fleet rollout` and `fleet watch` promote a staged release (`[rollout]`).
    #[serde(default)]
    pub rollout: super::rollout::RolloutConfig,
    /// `[s3]`: the S3-compatible service `fleet publish --to s3://…` uploads to.
    #[serde(default)]
    pub s3: super::s3::S3Config,
    /// `[http]`: the web root publish maintains for a web server (docs/serving.md).
    #[serde(default)]
    pub http: Option<super::http::HttpConfig>,
    /// `[[mirrors]]`: servers `fleet publish` copies every publication to after this one.
    #[serde(default)]
    pub mirrors: Vec<super::mirrors::MirrorConfig>,
}

/// The `[build]` table: the Nix commands, configurable so that tests can use a fake.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildConfig {
    /// The `nix` command, for hosts with a `flake.nix`.
    #[serde(default = "default_nix")]
    pub nix: String,
    /// The `nix-build` command, for hosts with a `configuration.nix` only.
    #[serde(default = "default_nix_build")]
    pub nix_build: String,
    /// `publish` builds every host (as `--build` does) unless told `--dry-build`.
    #[serde(default)]
    pub prebuild: bool,
    /// A real build (`publish --build`, `prebuild`) also exports the closure of each host's
    /// system into its publication as a binary cache (docs/publication.md#the-binary-cache).
    #[serde(default = "default_true")]
    pub cache: bool,
}

impl Default for BuildConfig {
    fn default() -> Self {
        Self {
            nix: default_nix(),
            nix_build: default_nix_build(),
            prebuild: false,
            cache: true,
        }
    }
}

fn default_nix() -> String {
    "nix".into()
}
fn default_true() -> bool {
    true
}
fn default_nix_build() -> String {
    "nix-build".into()
}

fn default_chroot() -> PathBuf {
    "/srv/tiffin".into()
}
fn default_port() -> u16 {
    22
}
fn default_keep() -> usize {
    3
}

/// A fleet file that could not be read or is not valid.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FleetConfigError(pub String);

impl HostConfig {
    pub fn dir_or_default(&self, name: &str) -> PathBuf {
        self.dir
            .clone()
            .unwrap_or_else(|| Path::new("hosts").join(name))
    }
    pub fn attr_or_default<'a>(&'a self, name: &'a str) -> &'a str {
        self.attr.as_deref().unwrap_or(name)
    }
    pub fn user_or_default<'a>(&'a self, name: &'a str) -> &'a str {
        self.user.as_deref().unwrap_or(name)
    }
}

impl FleetConfig {
    /// The signing key's path, and whether fleet.toml named it (then it must exist).
    pub fn signing_key_path(&self, fleet_dir: &Path) -> (PathBuf, bool) {
        match &self.signing_key {
            Some(p) => (fleet_dir.join(p), true),
            None => (fleet_dir.join(DEFAULT_SIGNING_KEY), false),
        }
    }

    /// Reads `fleet.toml` from a fleet directory.
    pub fn load(fleet_dir: &Path) -> Result<Self, FleetConfigError> {
        let path = fleet_dir.join(FLEET_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            FleetConfigError(format!(
                "{}: {e} (is this a fleet repository? `tiffin fleet init` makes one)",
                path.display()
            ))
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// `[http] root` and every `http_prefix` (`config::http`).
    fn check_http(&self, at: &dyn Fn(&str) -> String) -> Result<(), FleetConfigError> {
        let prefixes = self
            .hosts
            .iter()
            .map(|(n, h)| (n.as_str(), h.http_prefix.as_deref()));
        super::http::check_fleet(&self.chroot, self.http.as_ref(), prefixes, at)
            .map_err(FleetConfigError)
    }

    /// Parses and validates fleet text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, FleetConfigError> {
        let c: FleetConfig =
            toml::from_str(text).map_err(|e| FleetConfigError(toml_error(origin, text, &e)))?;
        let at = |needle: &str| -> String {
            match text.find(needle) {
                Some(off) => {
                    let (l, col) = line_col(text, off);
                    format!("{origin}:{l}:{col}")
                }
                None => origin.to_string(),
            }
        };
        check_chroot(&c.chroot).map_err(|why| {
            FleetConfigError(format!("{}: chroot {:?} {why}", at("chroot"), c.chroot))
        })?;
        if c.keep_generations == 0 {
            return Err(FleetConfigError(format!(
                "{}: keep_generations must be at least 1",
                at("keep_generations")
            )));
        }
        check_never_publish(&c.never_publish, &at)?;
        // One sshd Match block per user: two hosts sharing a user would share a chroot.
        let mut users: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, h) in &c.hosts {
            let here = at(&format!("hosts.{name}"));
            let user = h.user_or_default(name);
            if let Some(other) = users.insert(user, name) {
                return Err(FleetConfigError(format!(
                    "{here}: host {name:?}: user {user:?} is already the user of host {other:?}; each host needs its own user"
                )));
            }
            check_unix_name(name)
                .map_err(|why| FleetConfigError(format!("{here}: host {name:?}: {why}")))?;
            if let Some(u) = &h.user {
                check_unix_name(u).map_err(|why| {
                    FleetConfigError(format!("{here}: host {name:?}: user {u:?}: {why}"))
                })?;
            }
            if let Some(a) = &h.attr {
                check_nix_attr(a).map_err(|why| {
                    FleetConfigError(format!("{here}: host {name:?}: attr {a:?}: {why}"))
                })?;
            }
            check_ssh_public_key(&h.key).map_err(|why| {
                FleetConfigError(format!("{}: host {name:?}: key: {why}", at(&h.key)))
            })?;
            if let Some(d) = &h.dir {
                // "" would be the repository itself, every host's sources with it.
                if d.is_absolute()
                    || d.components().next().is_none()
                    || d.components()
                        .any(|c| !matches!(c, std::path::Component::Normal(_)))
                {
                    return Err(FleetConfigError(format!(
                        "{here}: host {name:?}: dir {d:?} must be a plain path inside the repository"
                    )));
                }
            }
        }
        let keys: Vec<(&str, &str)> = c
            .hosts
            .iter()
            .map(|(n, h)| (n.as_str(), h.key.as_str()))
            .collect();
        super::secrets::check(&c.secrets, &keys, &at).map_err(FleetConfigError)?;
        c.check_http(&at)?;
        super::mirrors::check(&c.mirrors, &c.chroot, &at).map_err(FleetConfigError)?;
        super::s3::check(&c.s3, &at).map_err(FleetConfigError)?;
        Ok(c)
    }
}

/// Each `never_publish` entry is a plain relative path inside the repository.
fn check_never_publish(
    entries: &[PathBuf],
    at: &dyn Fn(&str) -> String,
) -> Result<(), FleetConfigError> {
    for p in entries {
        if p.is_absolute()
            || p.components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(FleetConfigError(format!(
                "{}: never_publish entry {p:?} must be a plain path inside the repository",
                at("never_publish")
            )));
        }
    }
    Ok(())
}

/// A name usable as a Unix user name and a path component: `[a-z_][a-z0-9_-]*`, at most 32.
pub fn check_unix_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    if !first_ok
        || name.len() > 32
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        return Err(
            "not usable as a Unix user name and directory: use lower-case letters, digits, '-' and '_', starting with a letter, at most 32 characters"
                .into(),
        );
    }
    Ok(())
}

/// A flake attribute name usable unquoted in `nixosConfigurations.<attr>`.
pub fn check_nix_attr(attr: &str) -> Result<(), String> {
    let mut chars = attr.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '\'') {
        return Err("not a plain Nix attribute name: use letters, digits, '-', '_' and '\'', starting with a letter or '_'".into());
    }
    Ok(())
}

/// Checks an OpenSSH public key line as strictly as the NixOS server module (`publicKeyRe` in
/// packaging/nixos/lib.nix): one line (no newline or other control character: it becomes a line
/// of an authorized_keys file), starting with a known key type (so no `command=…` or other
/// options before it), base64 key data whose embedded type matches, then an optional comment.
pub fn check_ssh_public_key(key: &str) -> Result<(), String> {
    if let Some(c) = key.chars().find(|c| c.is_control() && *c != '\t') {
        return Err(format!(
            "contains the control character {c:?}: a key is one line (a newline would add lines, e.g. options, to the authorized_keys file)"
        ));
    }
    const KINDS: &[&str] = &[
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
    ];
    let usage = "expected \"<type> <base64> [comment]\", e.g. \"ssh-ed25519 AAAA… root@host\"";
    let (kind, rest) = key
        .split_once([' ', '\t'])
        .ok_or_else(|| usage.to_string())?;
    if !KINDS.contains(&kind) {
        return Err(format!(
            "{kind:?} is not a known key type ({}); options such as command=\"…\" before the key are not allowed",
            KINDS.join(", ")
        ));
    }
    let rest = rest.trim_start_matches([' ', '\t']);
    let blob = rest.split([' ', '\t']).next().unwrap_or("");
    let body = blob.trim_end_matches('=');
    if body.is_empty()
        || blob.len() - body.len() > 2
        || !body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    {
        return Err(format!("the key data {blob:?} is not base64; {usage}"));
    }
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .map_err(|e| format!("the key data is not valid base64: {e}"))?;
    // The blob starts with a length-prefixed copy of the key type.
    let inner = raw
        .get(..4)
        .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
        .and_then(|n| raw.get(4..4 + n));
    if inner != Some(kind.as_bytes()) {
        return Err(format!("the key data does not hold a {kind} key"));
    }
    Ok(())
}

/// Checks the chroot root as strictly as the NixOS server module (`plainAbsPathRe` in
/// packaging/nixos/lib.nix): absolute, components of letters, digits and `._+@-` only (sshd
/// splits its configuration on white space and treats `#` and `"` specially; a newline would
/// add a line), no `.` or `..`.
pub fn check_chroot(p: &Path) -> Result<(), String> {
    let text = p.to_str().ok_or("is not UTF-8")?;
    let plain = |c: &str| {
        !c.is_empty()
            && c != "."
            && c != ".."
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._+@-".contains(&b))
    };
    let rest = text.strip_prefix('/').ok_or("must be an absolute path")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || !rest.split('/').all(plain) {
        return Err(
            "must be an absolute path of plain components (letters, digits, '._+@-'; no '.' or '..'), e.g. \"/srv/tiffin\""
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOhfranTNzd5iz9u62K9DBWkqC9JBYkSle3Nr25o6PSa root@laptop";

    #[test]
    fn parses_hosts_with_defaults() {
        let c = FleetConfig::parse(
            &format!("server = \"s\"\n[hosts.laptop]\nkey = \"{KEY}\"\n"),
            "fleet.toml",
        )
        .unwrap();
        let h = &c.hosts["laptop"];
        assert_eq!(h.dir_or_default("laptop"), PathBuf::from("hosts/laptop"));
        assert_eq!(c.keep_generations, 3);
        assert_eq!(c.chroot, PathBuf::from("/srv/tiffin"));
    }

    #[test]
    fn bad_host_name_names_line() {
        let e = FleetConfig::parse(&format!("\n[hosts.Bad]\nkey = \"{KEY}\"\n"), "fleet.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("fleet.toml:2:2:") && e.contains("\"Bad\""),
            "{e}"
        );
    }

    #[test]
    fn malformed_key_is_refused_with_position() {
        let e = FleetConfig::parse("[hosts.a]\nkey = \"ssh-ed25519 AAAA!!\"\n", "fleet.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("fleet.toml:2:") && e.contains("base64"), "{e}");
    }

    #[test]
    fn a_host_key_with_options_or_a_newline_is_refused() {
        let bad = [
            (
                format!("{KEY}\\nssh-ed25519 AAAA other"),
                "control character",
            ),
            (format!("{KEY}\\r"), "control character"),
            (
                format!("command=\\\"/bin/sh\\\" {KEY}"),
                "not a known key type",
            ),
            (format!("no-pty {KEY}"), "not a known key type"),
            (format!(" {KEY}"), "not a known key type"),
            ("ssh-ed25519 AAAA$$$ x".to_string(), "not base64"),
            ("ssh-ed25519".to_string(), "expected"),
        ];
        for (key, why) in bad {
            let e = FleetConfig::parse(&format!("[hosts.a]\nkey = \"{key}\"\n"), "fleet.toml")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("fleet.toml:") && e.contains("key:") && e.contains(why),
                "{key:?}: {e}"
            );
        }
        // A tab between the parts and a comment with spaces are fine (as in lib.nix).
        let ok = KEY.replacen(' ', "\\t", 1) + " and more";
        FleetConfig::parse(&format!("[hosts.a]\nkey = \"{ok}\"\n"), "fleet.toml").unwrap();
    }

    #[test]
    fn a_chroot_that_sshd_would_split_or_that_climbs_is_refused() {
        for chroot in [
            "srv/tiffin",
            "/srv/tif fin",
            "/srv/../etc",
            "/srv/#x",
            "/",
            "/srv//x",
        ] {
            let e = FleetConfig::parse(&format!("chroot = \"{chroot}\"\n"), "fleet.toml")
                .unwrap_err()
                .to_string();
            assert!(e.contains("fleet.toml:1:1: chroot"), "{chroot:?}: {e}");
        }
        let e = FleetConfig::parse("chroot = \"/srv/x\\nMatch All\"\n", "fleet.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("plain components"), "{e}");
        FleetConfig::parse("chroot = \"/srv/tiffin-1.2_x@y/\"\n", "fleet.toml").unwrap();
    }

    #[test]
    fn duplicate_host_is_refused() {
        let e = FleetConfig::parse(
            &format!("[hosts.a]\nkey = \"{KEY}\"\n[hosts.a]\nkey = \"{KEY}\"\n"),
            "fleet.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("fleet.toml:3:"), "{e}");
    }

    #[test]
    fn build_table_sets_the_nix_commands() {
        let c = FleetConfig::parse("[build]\nnix = \"/x/fake-nix\"\n", "fleet.toml").unwrap();
        assert_eq!(c.build.nix, "/x/fake-nix");
        assert_eq!(c.build.nix_build, "nix-build");
        let e = FleetConfig::parse("[build]\nnixx = \"a\"\n", "fleet.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("fleet.toml:2:1:") && e.contains("nixx"),
            "{e}"
        );
    }

    #[test]
    fn two_hosts_with_one_user_are_refused() {
        let e = FleetConfig::parse(
            &format!("[hosts.a]\nkey = \"{KEY}\"\n[hosts.b]\nkey = \"{KEY}\"\nuser = \"a\"\n"),
            "fleet.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("fleet.toml:3:2:") && e.contains("\"a\""),
            "{e}"
        );
    }

    #[test]
    fn empty_or_escaping_host_dir_is_refused() {
        for dir in ["", "..", "a/../..", "/etc", "."] {
            let e = FleetConfig::parse(
                &format!("[hosts.a]\nkey = \"{KEY}\"\ndir = \"{dir}\"\n"),
                "fleet.toml",
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("must be a plain path inside"), "{dir:?}: {e}");
        }
    }

    #[test]
    fn attr_that_is_not_a_nix_name_is_refused() {
        let e = FleetConfig::parse(
            &format!("[hosts.a]\nkey = \"{KEY}\"\nattr = \"a.b\"\n"),
            "fleet.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("fleet.toml:1:") && e.contains("\"a.b\""), "{e}");
    }

    #[test]
    fn unknown_key_is_refused() {
        let e = FleetConfig::parse("chroott = \"/x\"\n", "fleet.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("fleet.toml:1:1:") && e.contains("chroott"),
            "{e}"
        );
    }
}
