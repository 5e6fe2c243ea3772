//! Signed publications: the admin's ed25519 key, its two file formats, and the signature of a
//! manifest (over [`Manifest::signed_bytes`]).
//!
//! Files (one line each, so that they can be read, copied and diffed by hand):
//! - secret key: `tiffin-ed25519-secret <base64 of the 32-byte seed>`, mode 0600;
//! - public key: `tiffin-ed25519 <base64 of the 32-byte key> <comment>`.
//!
//! A manifest's `signature` field is `ed25519:<key id>:<base64 of the 64-byte signature>`; the key
//! id (the first 16 hex digits of the sha256 of the public key) only makes errors say which key
//! signed, the check itself always uses the trusted key.
//!
//! The agent checks a signature over the raw bytes it read, before any JSON parsing
//! ([`PublicKey::verify_raw`]): in the canonical serialisation the signature is one line of its
//! own (`  "signature": "…",`), and the signed bytes are the file without that line. Only those
//! bytes are then parsed, so what the agent uses is exactly what the admin signed.

use crate::fsutil;
use crate::hash;
use crate::manifest::Manifest;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

const SECRET_TAG: &str = "tiffin-ed25519-secret";
const PUBLIC_TAG: &str = "tiffin-ed25519";
const SIGNATURE_PREFIX: &str = "ed25519";

/// Why a key could not be read, written or used, or a signature was refused.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: already exists; `--force` replaces it (agents trusting the old key then refuse new generations until they get the new public key)")]
    Exists { path: PathBuf },
    #[error("{origin}: {why}")]
    BadKey { origin: String, why: String },
    #[error("{0}")]
    BadSignature(String),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> SignError + '_ {
    move |source| SignError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The admin's signing key.
pub struct SecretKey(SigningKey);

/// The public half, as the agents trust it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl SecretKey {
    /// A fresh key from the kernel's random generator.
    pub fn generate() -> Result<Self, SignError> {
        let path = Path::new("/dev/urandom");
        let mut seed = [0u8; 32];
        std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut seed))
            .map_err(io_at(path))?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Reads a secret key file.
    pub fn load(path: &Path) -> Result<Self, SignError> {
        let text = std::fs::read_to_string(path).map_err(io_at(path))?;
        let seed = parse_line(&text, SECRET_TAG, &path.display().to_string())?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    /// Writes the secret key (0600, its directory created 0700) and the public key next to it
    /// (`<path>.pub` with the extension replaced); refuses to replace either unless `force`.
    /// Returns the public key's path.
    pub fn save(&self, path: &Path, comment: &str, force: bool) -> Result<PathBuf, SignError> {
        let public_path = public_path_for(path);
        if !force {
            for p in [path, public_path.as_path()] {
                if std::fs::symlink_metadata(p).is_ok() {
                    return Err(SignError::Exists {
                        path: p.to_path_buf(),
                    });
                }
            }
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_at(dir))?;
        }
        let secret = format!("{SECRET_TAG} {}\n", B64.encode(self.0.to_bytes()));
        fsutil::atomic_write(path, secret.as_bytes(), 0o600).map_err(io_at(path))?;
        let public = self.public().to_line(comment);
        fsutil::atomic_write(&public_path, public.as_bytes(), 0o644)
            .map_err(io_at(&public_path))?;
        Ok(public_path)
    }

    /// Signs `m` now (replacing any signature and signing time it had).
    pub fn sign_manifest(&self, m: &mut Manifest) {
        self.sign_manifest_at(m, std::time::SystemTime::now());
    }

    /// Signs `m` with `at` as its signing time (tests make old publications with it).
    pub fn sign_manifest_at(&self, m: &mut Manifest, at: std::time::SystemTime) {
        m.signature = None;
        m.format = m.format.max(crate::manifest::FORMAT_VERSION);
        m.signed_at = Some(humantime::format_rfc3339_seconds(at).to_string());
        let sig = self.0.sign(&m.signed_bytes());
        m.signature = Some(format!(
            "{SIGNATURE_PREFIX}:{}:{}",
            self.public().key_id(),
            B64.encode(sig.to_bytes())
        ));
    }
}

impl PublicKey {
    /// Reads a public key file.
    pub fn load(path: &Path) -> Result<Self, SignError> {
        let text = std::fs::read_to_string(path).map_err(io_at(path))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses a public key line; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, SignError> {
        let bytes = parse_line(text, PUBLIC_TAG, origin)?;
        VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|e| SignError::BadKey {
                origin: origin.into(),
                why: format!("not an ed25519 public key: {e}"),
            })
    }

    /// The file's line: `tiffin-ed25519 <base64> <comment>`.
    pub fn to_line(&self, comment: &str) -> String {
        let comment: String = comment.chars().filter(|c| !c.is_control()).collect();
        format!("{PUBLIC_TAG} {} {comment}\n", B64.encode(self.0.to_bytes())).replace(" \n", "\n")
    }

    /// A short name for the key, for messages.
    pub fn key_id(&self) -> String {
        hash::sha256_bytes(self.0.as_bytes())[..16].to_string()
    }

    /// Checks that `m` carries a valid signature by this key (over its canonical bytes). The
    /// error says what is wrong; callers add which generation and which key file.
    pub fn verify_manifest(&self, m: &Manifest) -> Result<(), SignError> {
        self.verify_raw(&m.to_bytes()).map(|_| ())
    }

    /// Checks the signature of raw manifest bytes without parsing them as JSON; returns the
    /// signed bytes (the file without its signature line) and the signature, the only bytes a
    /// caller may then parse.
    pub fn verify_raw(&self, raw: &[u8]) -> Result<(Vec<u8>, String), SignError> {
        let (signed, sig) = split_signature(raw)?;
        self.check_signature(&signed, &sig)?;
        Ok((signed, sig))
    }

    fn check_signature(&self, signed: &[u8], sig: &str) -> Result<(), SignError> {
        let mut parts = sig.splitn(3, ':');
        let (Some(SIGNATURE_PREFIX), Some(key_id), Some(b64)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(SignError::BadSignature(format!(
                "the signature is not `{SIGNATURE_PREFIX}:<key id>:<base64>`"
            )));
        };
        let bytes: [u8; 64] = B64
            .decode(b64)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                SignError::BadSignature("the signature is not 64 bytes of base64".into())
            })?;
        let mine = self.key_id();
        if key_id != mine {
            return Err(SignError::BadSignature(format!(
                "signed by key {key_id}, not by the trusted key {mine}"
            )));
        }
        let sig = ed25519_dalek::Signature::from_bytes(&bytes);
        self.0
            .verify_strict(signed, &sig)
            .map_err(|_| {
                SignError::BadSignature(format!(
                    "the signature by key {mine} does not match the manifest's content (altered after signing)"
                ))
            })
    }
}

/// The line that carries the signature in a canonical manifest (its value is base64 and hex, so
/// JSON escapes never occur in it).
const SIGNATURE_LINE_START: &[u8] = b"  \"signature\": \"";
const SIGNATURE_LINE_END: &[u8] = b"\",";

/// Splits raw manifest bytes into the signed bytes and the signature, without parsing JSON: the
/// one top-level line `  "signature": "…",` is cut out. No such line, or more than one: refused.
/// A JSON string cannot hold a raw newline, so a line is always structure, never content.
pub fn split_signature(raw: &[u8]) -> Result<(Vec<u8>, String), SignError> {
    let mut signed = Vec::with_capacity(raw.len());
    let mut found: Option<String> = None;
    for line in raw.split_inclusive(|b| *b == b'\n') {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let value = body
            .strip_prefix(SIGNATURE_LINE_START)
            .and_then(|v| v.strip_suffix(SIGNATURE_LINE_END));
        match value {
            Some(_) if found.is_some() => {
                return Err(SignError::BadSignature(
                    "the manifest has more than one signature line".into(),
                ));
            }
            Some(v) => {
                let v = std::str::from_utf8(v)
                    .ok()
                    .filter(|v| {
                        v.bytes()
                            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
                    })
                    .ok_or_else(|| {
                        SignError::BadSignature("the signature line is not plain text".into())
                    })?;
                found = Some(v.to_string());
            }
            None => signed.extend_from_slice(line),
        }
    }
    match found {
        Some(sig) => Ok((signed, sig)),
        None => Err(SignError::BadSignature("the manifest is not signed".into())),
    }
}

/// Where the public key of a secret key file goes: `keys/fleet-signing.key` →
/// `keys/fleet-signing.pub`.
pub fn public_path_for(secret: &Path) -> PathBuf {
    secret.with_extension("pub")
}

/// Reads `<tag> <base64 of 32 bytes> [comment]`.
fn parse_line(text: &str, tag: &str, origin: &str) -> Result<[u8; 32], SignError> {
    let bad = |why: String| SignError::BadKey {
        origin: origin.into(),
        why,
    };
    let mut words = text.split_whitespace();
    match words.next() {
        Some(t) if t == tag => {}
        Some(t) => {
            return Err(bad(format!(
                "starts with {t:?}, expected {tag:?} (a key made by `tiffin fleet keygen`)"
            )))
        }
        None => return Err(bad("empty file".into())),
    }
    let b64 = words
        .next()
        .ok_or_else(|| bad(format!("nothing after {tag:?}")))?;
    B64.decode(b64)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("the key is not 32 bytes of base64".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Entry;

    fn manifest() -> Manifest {
        Manifest::new(
            "laptop",
            3,
            "2026-11-25T10:00:00Z".into(),
            vec![Entry::file(
                "configuration.nix",
                0o644,
                4,
                hash::sha256_bytes(b"{ }\n"),
            )],
        )
    }

    #[test]
    fn a_signed_manifest_verifies_and_survives_serialisation() {
        let k = SecretKey::generate().unwrap();
        let mut m = manifest();
        k.sign_manifest(&mut m);
        let again = Manifest::parse(&m.to_bytes(), "m").unwrap();
        k.public().verify_manifest(&again).unwrap();
    }

    #[test]
    fn unsigned_other_key_and_altered_manifests_are_refused() {
        let k = SecretKey::generate().unwrap();
        let other = SecretKey::generate().unwrap();
        let m = manifest();
        let e = k.public().verify_manifest(&m).unwrap_err().to_string();
        assert!(e.contains("not signed"), "{e}");

        let mut by_other = manifest();
        other.sign_manifest(&mut by_other);
        let e = k
            .public()
            .verify_manifest(&by_other)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&other.public().key_id()), "{e}");

        // Another key's signature relabelled with the trusted key's id still fails.
        let mut relabelled = by_other.clone();
        let sig = relabelled.signature.clone().unwrap();
        relabelled.signature = Some(sig.replace(&other.public().key_id(), &k.public().key_id()));
        let e = k
            .public()
            .verify_manifest(&relabelled)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not match"), "{e}");

        let mut altered = manifest();
        k.sign_manifest(&mut altered);
        altered.generation = 4;
        let e = k
            .public()
            .verify_manifest(&altered)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not match"), "{e}");
    }

    #[test]
    fn key_files_round_trip_and_bad_files_name_themselves() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("keys/fleet-signing.key");
        let k = SecretKey::generate().unwrap();
        let pub_path = k.save(&path, "admin@fleet", false).unwrap();
        assert_eq!(pub_path, d.path().join("keys/fleet-signing.pub"));
        let loaded = SecretKey::load(&path).unwrap();
        assert_eq!(loaded.public(), k.public());
        assert_eq!(PublicKey::load(&pub_path).unwrap(), k.public());
        let text = std::fs::read_to_string(&pub_path).unwrap();
        assert!(text.starts_with("tiffin-ed25519 ") && text.ends_with(" admin@fleet\n"));

        let e = PublicKey::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("fleet-signing.key") && e.contains("tiffin-ed25519-secret"),
            "{e}"
        );
        std::fs::write(&pub_path, "tiffin-ed25519 AAAA\n").unwrap();
        let e = PublicKey::load(&pub_path).unwrap_err().to_string();
        assert!(
            e.contains("fleet-signing.pub") && e.contains("32 bytes"),
            "{e}"
        );
    }
}
