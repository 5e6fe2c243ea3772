//! Sealing: a host's `files/` and `files.toml` encrypted (the age format) to the host's own SSH
//! key at publish, opened only on that host with the key it already uses for SFTP
//! (docs/publication.md#sealed-files). The fleet side seals ([`Recipients`], [`seal`]); the agent
//! opens ([`Identity`], [`open`]). Nothing here touches a disk but the identity file it is given.

use crate::hash;
use base64::Engine as _;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// One recipient of a sealed file: an SSH public key (`ssh-ed25519`, `ssh-rsa`) or a native age
/// key (`age1…`, e.g. an admin's recovery key).
#[derive(Clone)]
enum One {
    Ssh(age::ssh::Recipient),
    Age(age::x25519::Recipient),
}

impl One {
    fn as_dyn(&self) -> &dyn age::Recipient {
        match self {
            One::Ssh(r) => r,
            One::Age(r) => r,
        }
    }
}

/// Everyone a host's files are sealed to: the host's key, then fleet.toml's `[secrets]
/// recipients`.
#[derive(Clone)]
pub struct Recipients {
    list: Vec<One>,
    /// The host key's fingerprint (`SHA256:…`, as `ssh-keygen -l` prints it).
    pub to: String,
    /// The other recipients' fingerprints (`age1…` keys as they are).
    pub also: Vec<String>,
}

impl Recipients {
    /// The host's key and the extra recipients; an error names the key that cannot be sealed to.
    pub fn new(host_key: &str, extra: &[String]) -> Result<Self, String> {
        let (one, to) = parse(host_key)?;
        let mut list = vec![one];
        let mut also = Vec::new();
        for r in extra {
            let (one, id) = parse(r)?;
            list.push(one);
            also.push(id);
        }
        Ok(Self { list, to, also })
    }

    /// One word for the whole set: sealed files are reused only while it stays the same.
    pub fn id(&self) -> String {
        let mut all = vec![self.to.clone()];
        all.extend(self.also.iter().cloned());
        all.join(" ")
    }
}

/// Checks that a key (an SSH public key line, or an `age1…` key) can be sealed to; returns its
/// fingerprint.
pub fn check_recipient(key: &str) -> Result<String, String> {
    parse(key).map(|(_, id)| id)
}

fn parse(key: &str) -> Result<(One, String), String> {
    let key = key.trim();
    if key.starts_with("age1") {
        let r: age::x25519::Recipient = key
            .parse()
            .map_err(|e| format!("{key:?} is not an age public key: {e}"))?;
        return Ok((One::Age(r), key.to_string()));
    }
    let r: age::ssh::Recipient = key.parse().map_err(|e| match e {
        age::ssh::ParseRecipientKeyError::Unsupported(kind) => format!(
            "files cannot be sealed to a {kind} key (age seals to ssh-ed25519 and ssh-rsa keys, and to age1… keys)"
        ),
        _ => format!("cannot seal to this key ({e:?}); expected an ssh-ed25519 or ssh-rsa public key, or an age1… key"),
    })?;
    Ok((One::Ssh(r), fingerprint(key)?))
}

/// The OpenSSH fingerprint of a public key line: `SHA256:` and the unpadded base64 of the sha256
/// of the key blob.
pub fn fingerprint(key_line: &str) -> Result<String, String> {
    let blob = key_line
        .split_whitespace()
        .nth(1)
        .ok_or("not an SSH public key line")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .map_err(|e| format!("the key data is not base64: {e}"))?;
    Ok(format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(hash::sha256_raw(&raw))
    ))
}

/// Seals `plain` to every recipient.
pub fn seal(plain: &[u8], to: &Recipients) -> Result<Vec<u8>, String> {
    let enc = age::Encryptor::with_recipients(to.list.iter().map(One::as_dyn))
        .map_err(|e| format!("cannot seal: {e}"))?;
    let mut out = Vec::with_capacity(plain.len() + 256);
    let mut w = enc
        .wrap_output(&mut out)
        .map_err(|e| format!("cannot seal: {e}"))?;
    w.write_all(plain)
        .and_then(|()| w.finish().map(drop))
        .map_err(|e| format!("cannot seal: {e}"))?;
    Ok(out)
}

/// The machine's own key, which opens what was sealed to it.
pub struct Identity {
    key: age::ssh::Identity,
    pub path: PathBuf,
}

impl Identity {
    /// Reads an unencrypted OpenSSH private key (the agent's `identity`).
    pub fn load(path: &Path) -> Result<Self, String> {
        let at = path.display();
        let f = std::fs::File::open(path).map_err(|e| format!("identity {at}: {e}"))?;
        let key = age::ssh::Identity::from_buffer(BufReader::new(f), Some(at.to_string()))
            .map_err(|e| format!("identity {at}: not an OpenSSH private key: {e}"))?;
        match &key {
            age::ssh::Identity::Unencrypted(_) => Ok(Self {
                key,
                path: path.to_path_buf(),
            }),
            age::ssh::Identity::Encrypted(_) => Err(format!(
                "identity {at}: the key is protected by a passphrase; the agent needs it unencrypted"
            )),
            age::ssh::Identity::Unsupported(k) => Err(format!(
                "identity {at}: this kind of key cannot open sealed files ({k:?}); use an ed25519 or RSA key"
            )),
        }
    }
}

/// Opens a sealed file in memory. The error says why (not sealed to this key, altered,
/// truncated); the caller names the file.
pub fn open(sealed: &[u8], id: &Identity) -> Result<Zeroizing<Vec<u8>>, String> {
    let dec = age::Decryptor::new(sealed).map_err(|e| format!("not a sealed file: {e}"))?;
    let mut r = dec
        .decrypt(std::iter::once(&id.key as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => format!(
                "not sealed to this machine's key ({}): was it published for another host, or before the host's key changed?",
                id.path.display()
            ),
            e => format!("cannot be opened (altered or truncated?): {e}"),
        })?;
    let mut plain = Zeroizing::new(Vec::with_capacity(sealed.len()));
    r.read_to_end(&mut plain)
        .map_err(|e| format!("cannot be opened (altered or truncated?): {e}"))?;
    Ok(plain)
}

#[cfg(test)]
mod tests;
