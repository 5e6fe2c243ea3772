//! The narinfos and NARs of the paths the store lacks, from the generation's `cache/` over the
//! cycle's own connection into `<state_dir>/nix-cache/`: each file checked against the size and
//! sha256 the signed manifest lists as it is written, and renamed into place only then. A file
//! already there that still checks out is not downloaded again, so a download cut in the middle
//! resumes at the next cycle with what was verified.

use crate::agent::pipeline::fetch::store::HashingWriter;
use crate::hash;
use crate::manifest::cache::{CacheFile, CachePath};
use crate::publication::layout;
use crate::source::Source;
use crate::status::CacheProgress;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// What one download did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Downloaded {
    pub files: u64,
    pub bytes: u64,
}

/// Why a download stopped: `transient` when the server could not be reached (the next cycle
/// resumes), else a refusal (a file that is not what the manifest lists, a broken layout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownloadError {
    pub why: String,
    pub transient: bool,
}

impl From<String> for DownloadError {
    fn from(why: String) -> Self {
        Self {
            why,
            transient: false,
        }
    }
}

/// Downloads the files of `paths` into `dir` (made if missing); `progress` gets paths and
/// bytes as they arrive.
pub fn download(
    source: &mut dyn Source,
    generation: u64,
    paths: &[&CachePath],
    dir: &Path,
    progress: &mut dyn FnMut(CacheProgress),
) -> Result<Downloaded, DownloadError> {
    fs::create_dir_all(dir.join("nar")).map_err(|e| format!("{}: {e}", dir.display()))?;
    check_free_space(dir, paths)?;
    let mut p = CacheProgress {
        total_paths: paths.len() as u64,
        total_bytes: paths.iter().map(|c| c.narinfo.size + c.nar.size).sum(),
        ..CacheProgress::default()
    };
    progress(p);
    let mut done = Downloaded::default();
    for c in paths {
        for f in [&c.narinfo, &c.nar] {
            if !is_verified(&dir.join(&f.name), f) {
                fetch_one(source, generation, f, dir)?;
                done.files += 1;
                done.bytes += f.size;
            }
            p.done_bytes += f.size;
            progress(p);
        }
        p.done_paths += 1;
        progress(p);
    }
    Ok(done)
}

/// A manifest may promise more than the disk holds (each file is capped, their sum is not):
/// refused before anything is downloaded. The store needs about as much again for the
/// unpacked paths, which Nix checks itself.
fn check_free_space(dir: &Path, paths: &[&CachePath]) -> Result<(), String> {
    let needed: u64 = paths
        .iter()
        .map(|c| c.narinfo.size.saturating_add(c.nar.size))
        .fold(0, u64::saturating_add);
    let st = nix::sys::statvfs::statvfs(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let free = (st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64);
    if needed > free {
        return Err(format!(
            "the host's cache needs {needed} bytes under {}, only {free} are free; nothing downloaded",
            dir.display()
        ));
    }
    Ok(())
}

/// True when `path` holds exactly `f` (a damaged or partial copy is removed).
pub fn is_verified(path: &Path, f: &CacheFile) -> bool {
    match hash::sha256_file(path) {
        Ok((sha, size)) if sha == f.sha256 && size == f.size => true,
        Ok(_) => {
            let _ = fs::remove_file(path);
            false
        }
        Err(_) => false,
    }
}

/// One file, written aside, checked, renamed in.
fn fetch_one(
    source: &mut dyn Source,
    generation: u64,
    f: &CacheFile,
    dir: &Path,
) -> Result<(), DownloadError> {
    let place = format!(
        "{}/{}",
        source.describe(),
        layout::cache_rel(generation, &f.name)
    );
    let dest = dir.join(&f.name);
    let parent = dest.parent().unwrap_or(dir);
    let tmp = tempfile::Builder::new()
        .prefix(".incoming-")
        .tempfile_in(parent)
        .map_err(|e| format!("{}: {e}", parent.display()))?;
    let mut w = HashingWriter::new(io::BufWriter::new(tmp.as_file()));
    source
        .read_cache_file(generation, &f.name, &mut w, f.size)
        .map_err(|e| match e.is_unreachable() {
            true => DownloadError {
                transient: true,
                why: e.to_string(),
            },
            false => format!("{e}; refused before import, nothing applied").into(),
        })?;
    w.flush()
        .map_err(|e| format!("{}: {e}", tmp.path().display()))?;
    let (got, got_size) = w.finish();
    if got != f.sha256 || got_size != f.size {
        return Err(format!(
            "{place}: expected {} bytes with sha256 {}, got {got_size} bytes with sha256 {got}; refused before import, nothing applied",
            f.size, f.sha256
        )
        .into());
    }
    tmp.persist(&dest)
        .map_err(|e| format!("{}: {}", dest.display(), e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::FileSource;

    #[test]
    fn a_cache_promising_more_than_the_free_disk_is_refused_before_any_download() {
        let d = tempfile::tempdir().unwrap();
        let huge = CacheFile {
            name: "nar/x.nar.zst".into(),
            size: 1 << 30,
            sha256: "a".repeat(64),
        };
        let p = CachePath {
            store_path: format!("/nix/store/{}-x", "a".repeat(32)),
            narinfo: CacheFile {
                name: format!("{}.narinfo", "a".repeat(32)),
                size: 1,
                sha256: "a".repeat(64),
            },
            nar: huge,
        };
        let many: Vec<&CachePath> = std::iter::repeat_n(&p, 1 << 20).collect();
        // The source has nothing: a download attempt would fail with "not found".
        let mut src = FileSource::new(d.path().join("nowhere"));
        let e = download(&mut src, 1, &many, &d.path().join("c"), &mut |_| {}).unwrap_err();
        assert!(
            e.why.contains("only") && e.why.contains("free"),
            "{}",
            e.why
        );
        assert!(!e.transient);
    }
}
