//! The manifest's `sealed` field: the host's `files/` and `files.toml` are age files sealed to
//! the host's SSH key (docs/publication.md#sealed-files). The entries list the sealed files, so
//! the signature covers them; the plain files' hashes are never published.

use serde::{Deserialize, Serialize};

/// To whom a generation's files are sealed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    /// The fingerprint (`SHA256:…`) of the host key they were sealed to: `fleet status` flags a
    /// host whose key in fleet.toml is another one.
    pub to: String,
    /// The other recipients (fleet.toml `[secrets] recipients`), by fingerprint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<String>,
}

impl Sealed {
    pub(super) fn check(&self) -> Result<(), String> {
        let plain =
            |s: &str| !s.is_empty() && s.len() <= 200 && s.bytes().all(|b| b.is_ascii_graphic());
        if !self.to.starts_with("SHA256:") || !plain(&self.to) {
            return Err(format!("to {:?} is not a key fingerprint", self.to));
        }
        if let Some(a) = self.also.iter().find(|a| !plain(a)) {
            return Err(format!("also {a:?} is not a key fingerprint"));
        }
        Ok(())
    }
}

/// The paths a sealed generation holds sealed: `files.toml` and everything under `files/`.
pub fn is_sealed_path(path: &str) -> bool {
    path == "files.toml" || path.starts_with("files/")
}
