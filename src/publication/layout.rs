//! Where a host's publication lives under the chroot root (docs/publication.md), and how to read it.
//!
//! ```text
//! <chroot>/<host>/            current -> gens/<N>, gens/<N>/{manifest.json,tree/}, logs/, backup/
//! ```
//!
//! The relative paths (`manifest_rel`, `tree_rel`, `log_rel`) are what a `Source` asks its
//! server for, inside the host's directory; [`Publication`] is the same layout on the admin's
//! disk.

use crate::fsutil::with_path;
use crate::manifest::{Manifest, ManifestError, MANIFEST_FILE};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The name of the link to the published generation.
pub const CURRENT: &str = "current";
/// Beside `current`, for readers without symlinks (HTTP): `gens/<N>\n`, replaced atomically right
/// after `current` switches ([`current_txt_body`]).
pub const CURRENT_TXT: &str = "current.txt";
/// The directory of generations.
pub const GENS: &str = "gens";
/// The only directory the host may write.
pub const LOGS: &str = "logs";
/// The host's restic repository: like `logs/`, writable by the host alone (docs/backup.md).
pub const BACKUP: &str = "backup";
/// The tree inside a generation.
pub const TREE: &str = "tree";
/// Prefix of a generation being written (never the target of `current`).
pub const INCOMING_PREFIX: &str = ".incoming-";

/// One host's publication directory, `<chroot>/<host>`.
#[derive(Clone, Debug)]
pub struct Publication {
    pub dir: PathBuf,
}

/// A publication whose `current` generation could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PublicationError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{path}: `current` points at {target:?}, which is not gens/<number>")]
    BadLink { path: PathBuf, target: PathBuf },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

impl Publication {
    pub fn new(chroot: &Path, host: &str) -> Self {
        Self {
            dir: chroot.join(host),
        }
    }
    pub fn gens(&self) -> PathBuf {
        self.dir.join(GENS)
    }
    pub fn current_link(&self) -> PathBuf {
        self.dir.join(CURRENT)
    }
    pub fn current_txt(&self) -> PathBuf {
        self.dir.join(CURRENT_TXT)
    }
    pub fn logs(&self) -> PathBuf {
        self.dir.join(LOGS)
    }
    pub fn backup(&self) -> PathBuf {
        self.dir.join(BACKUP)
    }
    pub fn generation_dir(&self, n: u64) -> PathBuf {
        self.gens().join(n.to_string())
    }
    /// The link text `current` gets for generation `n` (relative, so it works inside the chroot).
    pub fn link_target(n: u64) -> PathBuf {
        Path::new(GENS).join(n.to_string())
    }

    /// The generation `current` points at, or `None` when nothing was published yet.
    pub fn current_generation(&self) -> Result<Option<u64>, PublicationError> {
        let link = self.current_link();
        let target = match fs::read_link(&link) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(with_path(e, &link).into()),
        };
        parse_link(&target)
            .map(Some)
            .ok_or(PublicationError::BadLink { path: link, target })
    }

    /// The manifest of the current generation, or `None` when nothing was published yet.
    pub fn current_manifest(&self) -> Result<Option<Manifest>, PublicationError> {
        let Some(n) = self.current_generation()? else {
            return Ok(None);
        };
        let path = self.generation_dir(n).join(MANIFEST_FILE);
        let bytes = fs::read(&path).map_err(|e| with_path(e, &path))?;
        Ok(Some(Manifest::parse(&bytes, &path.display().to_string())?))
    }

    /// Every complete generation number present under `gens/`, ascending.
    pub fn generations(&self) -> io::Result<Vec<u64>> {
        let gens = self.gens();
        let mut out = Vec::new();
        let rd = match fs::read_dir(&gens) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(with_path(e, &gens)),
        };
        for item in rd {
            let item = item.map_err(|e| with_path(e, &gens))?;
            if let Some(n) = item.file_name().to_str().and_then(parse_generation) {
                out.push(n);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// The next generation number: above every generation present and the one `current` names,
    /// so numbers only grow.
    pub fn next_generation(&self) -> Result<u64, PublicationError> {
        let highest = self.generations()?.last().copied().unwrap_or(0);
        let current = self.current_generation()?.unwrap_or(0);
        Ok(highest.max(current) + 1)
    }
}

/// `gens/<N>` → N.
fn parse_link(target: &Path) -> Option<u64> {
    parse_current_target(target.to_str()?)
}

/// The target of the `current` link, `gens/<N>` (a trailing `/` is tolerated), → N; `None` for
/// anything else (`..`, absolute paths, deeper paths, a number with leading zeros).
pub fn parse_current_target(target: &str) -> Option<u64> {
    let n = target
        .strip_suffix('/')
        .unwrap_or(target)
        .strip_prefix(GENS)?
        .strip_prefix('/')?;
    parse_generation(n)
}

/// What `current.txt` holds for generation `n`: the target of `current` and a newline.
pub fn current_txt_body(generation: u64) -> String {
    format!("{GENS}/{generation}\n")
}

/// `gens/<N>/manifest.json`, inside the host's directory.
pub fn manifest_rel(generation: u64) -> String {
    format!("{GENS}/{generation}/{MANIFEST_FILE}")
}

/// `gens/<N>/tree`, inside the host's directory.
pub fn tree_dir_rel(generation: u64) -> String {
    format!("{GENS}/{generation}/{TREE}")
}

/// `gens/<N>/tree/<path>` (a manifest path), inside the host's directory.
pub fn tree_rel(generation: u64, path: &str) -> String {
    format!("{GENS}/{generation}/{TREE}/{path}")
}

/// `gens/<N>/cache/<name>` (a file of the generation's binary cache), inside the host's
/// directory.
pub fn cache_rel(generation: u64, name: &str) -> String {
    format!(
        "{GENS}/{generation}/{}/{name}",
        crate::manifest::cache::CACHE_DIR
    )
}

/// `logs/<name>`, inside the host's directory.
pub fn log_rel(name: &str) -> String {
    format!("{LOGS}/{name}")
}

/// `logs/.<name>.tmp`: where an upload is written before it is renamed to its name.
pub fn log_tmp_rel(name: &str) -> String {
    format!("{LOGS}/.{name}.tmp")
}

/// A generation directory name: a positive decimal number without leading zeros.
pub fn parse_generation(name: &str) -> Option<u64> {
    if name.is_empty() || name.starts_with('0') || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_targets_round_trip_and_odd_ones_are_refused() {
        assert_eq!(parse_link(&Publication::link_target(12)), Some(12));
        assert_eq!(parse_link(Path::new("gens/012")), None);
        assert_eq!(parse_link(Path::new("/gens/1")), None);
        assert_eq!(parse_link(Path::new("gens/1/x")), None);
        assert_eq!(parse_link(Path::new("other/1")), None);
        assert_eq!(parse_current_target("gens/42"), Some(42));
        assert_eq!(parse_current_target("gens/42/"), Some(42));
        for t in [
            "gens/../etc",
            "/etc",
            "gens/",
            "gens/1x",
            "tree",
            "gens/0",
            "gens",
        ] {
            assert_eq!(parse_current_target(t), None, "{t}");
        }
        assert_eq!(manifest_rel(3), "gens/3/manifest.json");
        assert_eq!(tree_rel(3, "etc/x"), "gens/3/tree/etc/x");
        assert_eq!(log_tmp_rel("seen.json"), "logs/.seen.json.tmp");
    }

    #[test]
    fn next_generation_is_above_everything_present() {
        let d = tempfile::tempdir().unwrap();
        let p = Publication::new(d.path(), "h");
        assert_eq!(p.next_generation().unwrap(), 1);
        for n in [2, 7, 5] {
            fs::create_dir_all(p.generation_dir(n)).unwrap();
        }
        fs::create_dir_all(p.gens().join(".incoming-9-1")).unwrap();
        std::os::unix::fs::symlink("gens/5", p.current_link()).unwrap();
        assert_eq!(p.generations().unwrap(), vec![2, 5, 7]);
        assert_eq!(p.current_generation().unwrap(), Some(5));
        assert_eq!(p.next_generation().unwrap(), 8);
    }
}
