//! What a manifest must satisfy before the agent uses any of it (agent.toml `trusted_key`,
//! `allow_unsigned`, `max_age`; SECURITY.md "Signed publications").
//!
//! Order of the checks on the server's manifest: at most [`MAX_MANIFEST_BYTES`] are read; with a
//! trusted key the signature is checked over those raw bytes, and only the signed bytes are
//! parsed; then host, generation, age, and the replay checks in `fetch`.

use super::error::FetchError;
use crate::manifest::{Manifest, MAX_MANIFEST_BYTES};
use crate::sign::PublicKey;
use crate::status::PublicationNote;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// What every manifest must satisfy.
#[derive(Clone, Debug, Default)]
pub struct TrustPolicy {
    /// The admin's public key and the file it came from (for messages). None: manifests are
    /// not verified (refused outright when `require_signature`).
    pub key: Option<(PublicKey, PathBuf)>,
    /// The generation this machine applied: nothing older is accepted.
    pub applied_generation: Option<u64>,
    /// An `sftp://` source without `allow_unsigned = true`: a manifest that cannot be verified
    /// (no `trusted_key`) is refused before the server is asked for it.
    pub require_signature: bool,
    /// agent.toml `max_age`: a publication signed longer ago than this is refused.
    pub max_age: Option<Duration>,
    /// The source is `sftp://` (for [`TrustPolicy::note`]).
    pub sftp: bool,
    /// The source is a web server (`http(s)://`): signatures are required whatever
    /// `allow_unsigned` says.
    pub untrusted_transport: bool,
}

impl TrustPolicy {
    /// No key, nothing required: every well-formed manifest is accepted (a `file://` source
    /// without `trusted_key`, and the library's tests).
    pub fn none() -> Self {
        Self::default()
    }

    /// The policy of an agent configuration for its `source` ([`TrustPolicy::for_source`]).
    pub fn from_config(
        config: &crate::config::AgentConfig,
        applied_generation: Option<u64>,
    ) -> Result<Self, String> {
        Self::for_source(config, &config.source, applied_generation)
    }

    /// The policy of an agent configuration for one of its sources: its `trusted_key` (read
    /// now, so that a replaced key file takes effect at the next cycle), `allow_unsigned` and
    /// `max_age`. An `sftp://` source needs a signature unless `allow_unsigned = true`; an
    /// `http(s)://` one (an untrusted transport) always does.
    pub fn for_source(
        config: &crate::config::AgentConfig,
        url: &crate::source::SourceUrl,
        applied_generation: Option<u64>,
    ) -> Result<Self, String> {
        let sftp = url.is_sftp();
        let key = if config.trusted_key.is_empty() {
            None
        } else {
            let path = PathBuf::from(&config.trusted_key);
            let key = PublicKey::load(&path).map_err(|e| {
                format!(
                    "trusted_key: {e}; nothing is fetched until the admin's public key is readable"
                )
            })?;
            Some((key, path))
        };
        let policy = Self {
            key,
            applied_generation,
            require_signature: (sftp && !config.allow_unsigned) || url.is_http(),
            max_age: config.max_age,
            sftp,
            untrusted_transport: url.is_http(),
        };
        // Before the server is even contacted.
        policy
            .check_configured(&url.to_string())
            .map_err(|e| e.to_string())?;
        Ok(policy)
    }

    /// What `tiffin status`, the tray and reports say after a sync under this policy:
    /// "publication too old" when `max_age` refused it, "unsigned" when nothing is verified on
    /// an sftp:// source (`allow_unsigned`).
    pub fn note<T>(&self, synced: &Result<T, FetchError>) -> Option<PublicationNote> {
        if matches!(synced, Err(FetchError::TooOld { .. })) {
            return Some(PublicationNote::TooOld);
        }
        (self.sftp && self.key.is_none()).then_some(PublicationNote::Unsigned)
    }

    /// Refuses at once when the policy requires signatures and has no key to check them with.
    pub fn check_configured(&self, place: &str) -> Result<(), FetchError> {
        if self.untrusted_transport && self.key.is_none() {
            return Err(FetchError::Refused {
                place: place.to_string(),
                why: "no trusted_key is configured, and a web server is an untrusted transport: an http(s):// \
                      source only serves signed publications (allow_unsigned does not apply); install the \
                      fleet's public key and set agent.toml `trusted_key`; nothing fetched"
                    .into(),
            });
        }
        if self.require_signature && self.key.is_none() {
            return Err(FetchError::Refused {
                place: place.to_string(),
                why: "no trusted_key is configured, and an sftp:// agent only uses manifests it can verify; \
                      install the fleet's public key and set agent.toml `trusted_key` (or, knowingly, \
                      `allow_unsigned = true`); nothing fetched"
                    .into(),
            });
        }
        Ok(())
    }

    /// Turns raw manifest bytes into a manifest: with a key, the signature is checked over the
    /// raw bytes first and only the signed bytes are parsed; without one they are parsed as they
    /// are. `generation` (the one `current` names) and `origin` name it in errors.
    pub fn open(&self, raw: &[u8], generation: u64, origin: &str) -> Result<Manifest, FetchError> {
        if raw.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(FetchError::Refused {
                place: origin.to_string(),
                why: format!(
                    "generation {generation} refused: the manifest is {} bytes, more than the {MAX_MANIFEST_BYTES} allowed; not parsed",
                    raw.len()
                ),
            });
        }
        let Some((key, key_file)) = &self.key else {
            return Ok(Manifest::parse(raw, origin)?);
        };
        let (signed, signature) = key.verify_raw(raw).map_err(|e| FetchError::Refused {
            place: origin.to_string(),
            why: format!(
                "generation {generation} refused before parsing: {e} (trusted_key {} requires every manifest to be signed by key {}); nothing downloaded or applied",
                key_file.display(),
                key.key_id()
            ),
        })?;
        let mut m = Manifest::parse(&signed, origin)?;
        m.signature = Some(signature);
        Ok(m)
    }

    /// With `max_age` (and a key, which makes the signing time trustworthy): refuses a manifest
    /// signed longer ago than that, or carrying no signing time.
    pub fn check_age(&self, m: &Manifest, origin: &str, now: SystemTime) -> Result<(), FetchError> {
        let (Some(max), Some(_)) = (self.max_age, &self.key) else {
            return Ok(());
        };
        let too_old = |why: String| {
            FetchError::TooOld {
            place: origin.to_string(),
            why: format!(
                "publication too old: generation {} {why}; agent.toml max_age is {}. The server may be serving a frozen, old publication, or the admin has not run `tiffin fleet publish` (which re-signs) for that long; nothing applied",
                m.generation,
                humantime::format_duration(max)
            ),
        }
        };
        let Some(at) = &m.signed_at else {
            return Err(too_old(
                "carries no signing time (published by an older tiffin)".into(),
            ));
        };
        // The manifest was verified and validated: the time parses.
        let signed = humantime::parse_rfc3339(at).unwrap_or(SystemTime::UNIX_EPOCH);
        let age = now.duration_since(signed).unwrap_or_default();
        if age > max {
            return Err(too_old(format!(
                "was signed at {at}, {} ago",
                crate::timefmt::span(age.as_secs())
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Entry;
    use crate::sign::SecretKey;

    fn manifest() -> Manifest {
        Manifest::new(
            "h",
            1,
            "2026-11-25T10:00:00Z".into(),
            vec![Entry::file(
                "configuration.nix",
                0o644,
                4,
                crate::hash::sha256_bytes(b"{ }\n"),
            )],
        )
    }

    fn policy(key: &SecretKey, max_age: Option<Duration>) -> TrustPolicy {
        TrustPolicy {
            key: Some((key.public(), "/etc/tiffin/fleet-signing.pub".into())),
            require_signature: true,
            max_age,
            ..TrustPolicy::none()
        }
    }

    #[test]
    fn an_oversized_manifest_is_refused_before_parsing() {
        let key = SecretKey::generate().unwrap();
        // Not even JSON: a parser would say so; the size check must come first.
        let raw = vec![b'['; MAX_MANIFEST_BYTES as usize + 1];
        for p in [policy(&key, None), TrustPolicy::none()] {
            let e = p
                .open(&raw, 1, "gens/1/manifest.json")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("gens/1/manifest.json") && e.contains("not parsed"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_signature_is_checked_over_the_raw_bytes_before_any_parsing() {
        let key = SecretKey::generate().unwrap();
        let p = policy(&key, None);
        let mut m = manifest();
        key.sign_manifest(&mut m);
        let raw = m.to_bytes();
        assert_eq!(p.open(&raw, 1, "m").unwrap(), m);
        // Not JSON at all, unsigned: refused by the signature check, not by the parser.
        let e = p.open(b"{{{{ not json", 1, "m").unwrap_err().to_string();
        assert!(
            e.contains("before parsing") && e.contains("not signed"),
            "{e}"
        );
        // One changed byte inside the signed bytes: refused before parsing.
        let text = String::from_utf8(raw.clone()).unwrap();
        let altered = text.replace("\"h\"", "\"x\"");
        let e = p.open(altered.as_bytes(), 1, "m").unwrap_err().to_string();
        assert!(e.contains("does not match"), "{e}");
        // A second signature line is refused too.
        let sig_line = text.lines().find(|l| l.contains("\"signature\"")).unwrap();
        let doubled = text.replace(sig_line, &format!("{sig_line}\n{sig_line}"));
        let e = p.open(doubled.as_bytes(), 1, "m").unwrap_err().to_string();
        assert!(e.contains("more than one signature"), "{e}");
    }

    #[test]
    fn without_a_key_an_sftp_policy_refuses_and_says_how_to_fix_it() {
        let p = TrustPolicy {
            require_signature: true,
            sftp: true,
            ..TrustPolicy::none()
        };
        let e = p.check_configured("sftp://h@s:22/").unwrap_err();
        assert!(
            e.to_string().contains("trusted_key")
                && e.to_string().contains("allow_unsigned = true"),
            "{e}"
        );
        assert_eq!(p.note(&Ok(())), Some(PublicationNote::Unsigned));
        assert_eq!(TrustPolicy::none().note(&Ok(())), None);
        TrustPolicy::none().check_configured("x").unwrap();
    }

    #[test]
    fn an_http_source_needs_a_signature_even_with_allow_unsigned() {
        use crate::config::AgentConfig;
        let text = "host = \"a\"\nsource = \"sftp://a@s:22/\"\nallow_unsigned = true\n";
        let c = AgentConfig::parse(text, "agent.toml").unwrap();
        let sftp = TrustPolicy::for_source(&c, &c.source, None).unwrap();
        assert!(!sftp.require_signature && sftp.sftp);
        let web = crate::source::SourceUrl::parse("https://cdn.example.org/p/").unwrap();
        let e = TrustPolicy::for_source(&c, &web, None).unwrap_err();
        assert!(
            e.contains("https://cdn.example.org/p/") && e.contains("untrusted transport"),
            "{e}"
        );
    }

    #[test]
    fn max_age_refuses_an_old_or_undated_publication() {
        let key = SecretKey::generate().unwrap();
        let p = policy(&key, Some(Duration::from_secs(30 * 86400)));
        let now = SystemTime::now();
        let mut m = manifest();
        key.sign_manifest_at(&mut m, now - Duration::from_secs(29 * 86400));
        p.check_age(&m, "m", now).unwrap();
        key.sign_manifest_at(&mut m, now - Duration::from_secs(31 * 86400));
        let e = p.check_age(&m, "m", now).unwrap_err();
        assert!(matches!(e, FetchError::TooOld { .. }), "{e}");
        assert!(e.to_string().contains("publication too old"), "{e}");
        m.signed_at = None;
        let e = p.check_age(&m, "m", now).unwrap_err().to_string();
        assert!(e.contains("no signing time"), "{e}");
        // Without max_age, age does not matter.
        policy(&key, None).check_age(&m, "m", now).unwrap();
    }
}
