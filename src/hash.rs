//! The single hashing routine: sha256, lower-case hex. Everything that hashes content goes here.

use sha2::{Digest, Sha256};
use std::io::{self, Read};
use std::path::Path;

/// A sha256 digest as 64 lower-case hex characters.
pub type Sha256Hex = String;

/// Hashes a byte slice.
pub fn sha256_bytes(data: &[u8]) -> Sha256Hex {
    hex::encode(Sha256::digest(data))
}

/// Hashes a byte slice into the 32 raw bytes (SSH key fingerprints are their base64).
pub fn sha256_raw(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Hashes everything a reader yields; returns the digest and the number of bytes read.
pub fn sha256_reader(mut r: impl Read) -> io::Result<(Sha256Hex, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

/// Hashes a file's content.
pub fn sha256_file(path: &Path) -> io::Result<(Sha256Hex, u64)> {
    sha256_reader(std::fs::File::open(path)?)
}

/// An incremental hasher for data that arrives in pieces (downloads).
#[derive(Default)]
pub struct Hasher(Sha256);

impl Hasher {
    pub fn new() -> Self {
        Self(Sha256::new())
    }
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    pub fn finish(self) -> Sha256Hex {
        hex::encode(self.0.finalize())
    }
}

/// True when `s` looks like a sha256 digest as this crate writes it.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest_of_abc() {
        assert_eq!(
            sha256_bytes(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut h = Hasher::new();
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.finish(), sha256_bytes(b"abc"));
    }

    #[test]
    fn hex_check_rejects_upper_case_and_wrong_length() {
        assert!(is_sha256_hex(&sha256_bytes(b"")));
        assert!(!is_sha256_hex(&sha256_bytes(b"").to_uppercase()));
        assert!(!is_sha256_hex("abc"));
    }
}
