//! `publish --build`: the closure of a host's expected system as a Nix binary cache in its
//! generation (`gens/<N>/cache/`, docs/publication.md#the-binary-cache).
//!
//! `nix copy --to file://<chroot>/.nix-cache` exports into one pool beside the chroots (outside
//! every host's chroot, root only), skipping what the pool already holds; each generation then
//! gets hard links to exactly the files of its own closure, found by following the narinfos'
//! `References` from the system. A NAR shared by several hosts, or by the previous generation,
//! is one file on the server's disk. Nothing is signed by Nix: the manifest lists every file
//! with its size and sha256, and the fleet's signature covers that.

use super::outcome::{HostError, GEN_DIR_MODE};
use super::stage::set_owner_mode;
use crate::config::BuildConfig;
use crate::fsutil::with_path;
use crate::hash;
use crate::manifest::cache::{hash_part, CacheFile, CacheIndex, CachePath, CACHE_DIR};
use crate::nixcache::{export_args, parse_narinfo, CACHE_INFO};
use crate::runner::Runner;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The pool's directory under the chroot root (a dot name: never a host, never an orphan).
pub(super) const POOL_DIR: &str = ".nix-cache";

/// The server's one binary cache every host's generations link into.
pub(super) struct CachePool {
    dir: PathBuf,
    /// One export at a time: two `nix copy` runs would replace each other's files.
    lock: Mutex<()>,
    /// Something was exported in this run (then unlinked files are pruned at its end).
    pub(super) used: std::sync::atomic::AtomicBool,
}

impl CachePool {
    pub(super) fn new(chroot: &Path) -> Self {
        Self {
            dir: chroot.join(POOL_DIR),
            lock: Mutex::new(()),
            used: Default::default(),
        }
    }

    /// Exports the closure of `system` into the pool and returns its index.
    pub(super) fn export(
        &self,
        build: &BuildConfig,
        runner: &Runner,
        system: &str,
    ) -> Result<CacheIndex, HostError> {
        let _one = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.used.store(true, std::sync::atomic::Ordering::SeqCst);
        match fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(with_path(e, &self.dir).into())
            }
            _ => {}
        }
        let out = runner
            .run(&build.nix, &export_args(&self.dir, system), None)
            .map_err(|e| HostError::Cache(format!("{}: {e}", build.nix)))?;
        if !out.success() {
            return Err(HostError::Cache(format!(
                "exporting {system} into {}: {}",
                self.dir.display(),
                crate::nixcli::describe_failure(&out)
            )));
        }
        index_of(&self.dir, system).map_err(HostError::Cache)
    }

    /// Hard-links the files of `index` from the pool into `dest` (the new generation's
    /// `cache/`, which must not exist), with `nix-cache-info`.
    pub(super) fn link_into(
        &self,
        index: &CacheIndex,
        dest: &Path,
        owner: Option<(u32, u32)>,
    ) -> Result<(), HostError> {
        for d in [dest.to_path_buf(), dest.join("nar")] {
            fs::DirBuilder::new()
                .mode(GEN_DIR_MODE)
                .create(&d)
                .map_err(|e| with_path(e, &d))?;
            set_owner_mode(&d, owner, GEN_DIR_MODE)?;
        }
        let info = dest.join("nix-cache-info");
        crate::fsutil::atomic_write(&info, CACHE_INFO.as_bytes(), 0o644)?;
        for p in &index.paths {
            for f in [&p.narinfo, &p.nar] {
                let (from, to) = (self.dir.join(&f.name), dest.join(&f.name));
                if fs::hard_link(&from, &to).is_err() {
                    // Another filesystem: a copy, checked like every published byte.
                    fs::copy(&from, &to).map_err(|e| with_path(e, &from))?;
                    let (got, size) = hash::sha256_file(&to).map_err(|e| with_path(e, &to))?;
                    if got != f.sha256 || size != f.size {
                        return Err(HostError::Cache(format!(
                            "{} changed while it was being published",
                            from.display()
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes the pool's files that no generation links any more (their link count is 1).
    pub(super) fn prune(&self) -> usize {
        let mut removed = 0;
        for d in [self.dir.clone(), self.dir.join("nar")] {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                let keep = e.file_name() == "nix-cache-info"
                    || e.metadata().map_or(true, |m| !m.is_file() || m.nlink() > 1);
                if !keep && fs::remove_file(e.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }
}

/// The index of the closure of `system` in the cache at `dir`: the narinfos followed from the
/// system through their `References`, each with its NAR.
pub(super) fn index_of(dir: &Path, system: &str) -> Result<CacheIndex, String> {
    let mut todo = vec![system.to_string()];
    let mut seen = BTreeSet::new();
    let mut paths = BTreeMap::new();
    while let Some(p) = todo.pop() {
        if !seen.insert(p.clone()) {
            continue;
        }
        let h = hash_part(&p).ok_or_else(|| format!("{p:?} is not a store path"))?;
        let (narinfo, info) = read_file_entry(dir, &format!("{h}.narinfo"))?;
        let origin = dir.join(&narinfo.name).display().to_string();
        let parsed = parse_narinfo(&String::from_utf8_lossy(&info), &origin)?;
        if parsed.store_path != p {
            return Err(format!(
                "{origin}: describes {}, not {p}",
                parsed.store_path
            ));
        }
        let nar = nar_entry(dir, &parsed.url, parsed.file_sha256, parsed.file_size)?;
        todo.extend(parsed.references.into_iter().filter(|r| !seen.contains(r)));
        paths.insert(
            p.clone(),
            CachePath {
                store_path: p,
                narinfo,
                nar,
            },
        );
    }
    Ok(CacheIndex {
        paths: paths.into_values().collect(),
    })
}

/// A small file of the cache, hashed, and its bytes.
fn read_file_entry(dir: &Path, name: &str) -> Result<(CacheFile, Vec<u8>), String> {
    let path = dir.join(name);
    let bytes = fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let f = CacheFile {
        name: name.to_string(),
        size: bytes.len() as u64,
        sha256: hash::sha256_bytes(&bytes),
    };
    Ok((f, bytes))
}

/// A NAR: its hash is the narinfo's `FileHash` (the pool's files are named by it and never
/// change), checked against the file's size; without one the file is hashed.
fn nar_entry(
    dir: &Path,
    url: &str,
    file_sha256: Option<String>,
    file_size: Option<u64>,
) -> Result<CacheFile, String> {
    let path = dir.join(url);
    let size = fs::metadata(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    let sha256 = match (file_sha256, file_size) {
        (Some(h), Some(s)) if s == size => h,
        (_, Some(s)) if s != size => {
            return Err(format!(
                "{}: {size} bytes, its narinfo says {s}; remove it and publish again",
                path.display()
            ))
        }
        _ => {
            hash::sha256_file(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .0
        }
    };
    Ok(CacheFile {
        name: url.to_string(),
        size,
        sha256,
    })
}

/// The generation's cache directory.
pub(super) fn cache_dir(generation_dir: &Path) -> PathBuf {
    generation_dir.join(CACHE_DIR)
}
