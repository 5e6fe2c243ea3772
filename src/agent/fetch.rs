//! Step 1–2 of the pipeline: the one-round-trip change check, the delta download into the
//! content store, and the materialisation of the tree in staging, swapped in atomically.
//!
//! Local layout under the state directory:
//! `store/<sha256>` (verified objects), `trees/<N>/` (materialised trees),
//! `trees/<N>.manifest.json`, and `tree -> trees/<N>` (the last complete fetch).
//! A failed or partial download never changes `tree`.

use super::store::{ContentStore, StoreError};
use crate::fsutil;
use crate::hash::Sha256Hex;
use crate::manifest::{EntryKind, Manifest, ManifestError, MAX_MANIFEST_BYTES};
use crate::source::{Source, SourceError};
use crate::status::Progress;
use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// How many times a sync restarts when the server republished under it.
const REPUBLISH_RETRIES: usize = 3;
/// How many materialised trees are kept (the newest and the one before).
const KEEP_TREES: usize = 2;

/// A tree present locally and checked against its manifest.
#[derive(Clone, Debug)]
pub struct LocalTree {
    pub generation: u64,
    pub manifest: Manifest,
    pub tree: PathBuf,
}

/// What a sync found.
#[derive(Clone, Debug)]
pub enum SyncOutcome {
    /// The server has no generation for this host yet.
    NothingPublished,
    /// The published generation is the one already fetched: nothing was transferred.
    Unchanged(LocalTree),
    /// A new generation was fetched and swapped in.
    Fetched {
        local: LocalTree,
        downloaded_files: u64,
        downloaded_bytes: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{place}: {why}")]
    Refused { place: String, why: String },
    /// agent.toml `max_age`: the publication was signed too long ago (status: "publication too
    /// old").
    #[error("{place}: {why}")]
    TooOld { place: String, why: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl FetchError {
    pub fn is_unreachable(&self) -> bool {
        matches!(self, FetchError::Source(e) if e.is_unreachable())
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub use super::trust::TrustPolicy;

/// The newest generation whose signature this agent ever verified, kept in
/// `<state_dir>/verified.json`: a server that later serves an older (genuinely signed) generation
/// is replaying it, and one that serves the same number with other content is lying.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HighestVerified {
    pub generation: u64,
    pub tree_hash: Sha256Hex,
}

const VERIFIED_FILE: &str = "verified.json";

/// Paths of the fetch state under the agent's state directory.
pub struct FetchDirs {
    pub state_dir: PathBuf,
}

impl FetchDirs {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            state_dir: state_dir.to_path_buf(),
        }
    }
    fn trees(&self) -> PathBuf {
        self.state_dir.join("trees")
    }
    fn tree_link(&self) -> PathBuf {
        self.state_dir.join("tree")
    }
    fn manifest_copy(&self, generation: u64) -> PathBuf {
        self.trees().join(format!("{generation}.manifest.json"))
    }

    /// The newest verified generation; an unreadable record is an error (never "none", which
    /// would re-open the door to a rollback).
    pub fn highest_verified(&self) -> Result<Option<HighestVerified>, FetchError> {
        let path = self.state_dir.join(VERIFIED_FILE);
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| FetchError::Refused {
                    place: path.display().to_string(),
                    why: format!("not a valid record of the newest verified generation ({e}); with a trusted key nothing is fetched until it is repaired or removed"),
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_at(&path)(e)),
        }
    }

    fn record_verified(&self, v: &HighestVerified) -> Result<(), FetchError> {
        let path = self.state_dir.join(VERIFIED_FILE);
        let mut bytes =
            serde_json::to_vec_pretty(v).map_err(|e| io_at(&path)(io::Error::other(e)))?;
        bytes.push(b'\n');
        fsutil::atomic_write(&path, &bytes, 0o600).map_err(io_at(&path))
    }

    /// The last completely fetched tree, if any.
    pub fn local_tree(&self) -> Result<Option<LocalTree>, FetchError> {
        let link = self.tree_link();
        let target = match fs::read_link(&link) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_at(&link)(e)),
        };
        let generation = target
            .strip_prefix("trees")
            .ok()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| FetchError::Refused {
                place: link.display().to_string(),
                why: format!("points to {}, not trees/<N>", target.display()),
            })?;
        let mpath = self.manifest_copy(generation);
        let bytes = fs::read(&mpath).map_err(io_at(&mpath))?;
        let manifest = Manifest::parse(&bytes, &mpath.display().to_string())?;
        Ok(Some(LocalTree {
            generation,
            manifest,
            tree: self.trees().join(generation.to_string()),
        }))
    }
}

/// Checks the server and fetches the current generation when it is not the local one.
/// `progress` is called as files arrive. Trusts no key: see [`sync_trusted`].
pub fn sync(
    source: &mut dyn Source,
    state_dir: &Path,
    host: &str,
    progress: &mut dyn FnMut(Progress),
) -> Result<SyncOutcome, FetchError> {
    sync_trusted(source, state_dir, host, &TrustPolicy::none(), progress)
}

/// [`sync`] under a [`TrustPolicy`]: with a key, every manifest (the server's, and the local
/// copy of an unchanged one) has its signature and generation checked before anything of its
/// generation is downloaded or used.
pub fn sync_trusted(
    source: &mut dyn Source,
    state_dir: &Path,
    host: &str,
    trust: &TrustPolicy,
    progress: &mut dyn FnMut(Progress),
) -> Result<SyncOutcome, FetchError> {
    trust.check_configured(&source.describe())?;
    let dirs = FetchDirs::new(state_dir);
    fs::create_dir_all(dirs.trees()).map_err(io_at(&dirs.trees()))?;
    let store = ContentStore::open(state_dir)?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let Some(generation) = source.current_generation()? else {
            return Ok(SyncOutcome::NothingPublished);
        };
        let local = dirs.local_tree().ok().flatten();
        if let Some(l) = local.as_ref().filter(|l| l.generation == generation) {
            let origin = dirs.manifest_copy(generation).display().to_string();
            check_trust(&dirs, trust, &l.manifest, &origin)?;
            if trust.max_age.is_some() && trust.key.is_some() {
                // The local copy only ages: the server's copy may have been re-signed since.
                let (m, origin) = read_manifest(source, trust, host, generation)?;
                if m.tree_hash != l.manifest.tree_hash {
                    return Err(FetchError::Refused {
                        place: origin,
                        why: format!(
                            "generation {generation} refused: this machine fetched it with tree {}, the server now shows tree {} under the same number",
                            l.manifest.tree_hash, m.tree_hash
                        ),
                    });
                }
                trust.check_age(&m, &origin, std::time::SystemTime::now())?;
            }
            return Ok(SyncOutcome::Unchanged(l.clone()));
        }
        match fetch_generation(
            source,
            &dirs,
            &store,
            host,
            generation,
            local.as_ref(),
            trust,
            progress,
        ) {
            // The generation was pruned while we read it: a newer one is there; start over.
            Err(FetchError::Source(SourceError::NotFound { .. }))
                if attempt < REPUBLISH_RETRIES =>
            {
                tracing::info!(
                    generation,
                    "generation disappeared during download; rechecking"
                );
                continue;
            }
            r => return r,
        }
    }
}

// One call site; a struct for these would only rename them.
#[allow(clippy::too_many_arguments)]
fn fetch_generation(
    source: &mut dyn Source,
    dirs: &FetchDirs,
    store: &ContentStore,
    host: &str,
    generation: u64,
    previous: Option<&LocalTree>,
    trust: &TrustPolicy,
    progress: &mut dyn FnMut(Progress),
) -> Result<SyncOutcome, FetchError> {
    let (manifest, origin) = read_manifest(source, trust, host, generation)?;
    trust.check_age(&manifest, &origin, std::time::SystemTime::now())?;
    check_trust(dirs, trust, &manifest, &origin)?;

    let missing: Vec<_> = {
        let mut seen = HashSet::new();
        manifest
            .files()
            .filter(|e| {
                let h = e.sha256.as_deref().unwrap_or_default();
                !store.contains(h) && seen.insert(h)
            })
            .collect()
    };
    // A manifest may promise more than the disk holds (each file is capped, their sum is not):
    // refuse before downloading rather than fill the disk. The store gets the missing files,
    // staging a copy of the whole tree.
    let needed = missing
        .iter()
        .filter_map(|e| e.size)
        .sum::<u64>()
        .saturating_add(manifest.total_bytes());
    let free = free_bytes(&dirs.state_dir)?;
    if needed > free {
        return Err(FetchError::Refused {
            place: origin,
            why: format!(
                "this generation needs {needed} bytes under {}, only {free} are free; nothing downloaded",
                dirs.state_dir.display()
            ),
        });
    }
    // Every path is checked on the server before any byte is downloaded.
    for e in &missing {
        source.check_tree_path(generation, &e.path)?;
    }
    let mut p = Progress {
        total_files: missing.len() as u64,
        total_bytes: missing.iter().filter_map(|e| e.size).sum(),
        ..Progress::default()
    };
    progress(p);
    for e in &missing {
        let (sha, size) = (e.sha256.as_deref().unwrap_or_default(), e.size.unwrap_or(0));
        store.insert_with::<FetchError>(&e.path, sha, size, |w| {
            source.read_file(generation, &e.path, w, size)?;
            Ok(())
        })?;
        p.done_files += 1;
        p.done_bytes += size;
        progress(p);
    }

    let tree = materialise(dirs, store, &manifest, previous)?;
    let done = LocalTree {
        generation,
        manifest,
        tree,
    };
    prune(dirs, store, generation);
    Ok(SyncOutcome::Fetched {
        local: done,
        downloaded_files: p.done_files,
        downloaded_bytes: p.done_bytes,
    })
}

/// Reads the server's manifest of `generation` (at most [`MAX_MANIFEST_BYTES`]), opens it under
/// `trust` (signature over the raw bytes before parsing) and checks that it is this host's and
/// this generation's. Returns it with its origin, for messages.
fn read_manifest(
    source: &mut dyn Source,
    trust: &TrustPolicy,
    host: &str,
    generation: u64,
) -> Result<(Manifest, String), FetchError> {
    let origin = format!("{}/gens/{generation}/manifest.json", source.describe());
    let bytes = source.read_manifest(generation, MAX_MANIFEST_BYTES)?;
    let manifest = trust.open(&bytes, generation, &origin)?;
    if manifest.host != host {
        return Err(FetchError::Refused {
            place: origin,
            why: format!("manifest is for host {:?}, this is {host:?}", manifest.host),
        });
    }
    if manifest.generation != generation {
        return Err(FetchError::Refused {
            place: origin,
            why: format!(
                "manifest says generation {}, `current` says {generation}",
                manifest.generation
            ),
        });
    }
    Ok((manifest, origin))
}

/// With a trusted key: the manifest must be signed by it, and its generation must be neither
/// older than the applied one nor older than (or a different tree under the same number as) the
/// newest ever verified. A manifest that passes and is newer is recorded as the newest verified.
fn check_trust(
    dirs: &FetchDirs,
    trust: &TrustPolicy,
    manifest: &Manifest,
    origin: &str,
) -> Result<(), FetchError> {
    let Some((key, key_file)) = &trust.key else {
        return Ok(());
    };
    let g = manifest.generation;
    let refuse = |why: String| FetchError::Refused {
        place: origin.to_string(),
        why: format!("generation {g} refused: {why}; nothing downloaded or applied"),
    };
    key.verify_manifest(manifest).map_err(|e| {
        refuse(format!(
            "{e} (trusted_key {} requires every manifest to be signed by key {})",
            key_file.display(),
            key.key_id()
        ))
    })?;
    if let Some(applied) = trust.applied_generation.filter(|a| g < *a) {
        return Err(refuse(format!(
            "it is older than generation {applied}, which this machine applied (a replayed publication: the server may be compromised; to go back, publish the old configuration as a new generation)"
        )));
    }
    let highest = dirs.highest_verified()?;
    if let Some(h) = &highest {
        if g < h.generation {
            return Err(refuse(format!(
                "it is older than generation {}, the newest this machine has verified (a replayed publication: the server may be compromised)",
                h.generation
            )));
        }
        if g == h.generation && manifest.tree_hash != h.tree_hash {
            return Err(refuse(format!(
                "this machine verified generation {g} with tree {} before; the server now shows tree {} under the same number",
                h.tree_hash, manifest.tree_hash
            )));
        }
    }
    if highest.as_ref().map_or(true, |h| g > h.generation) {
        dirs.record_verified(&HighestVerified {
            generation: g,
            tree_hash: manifest.tree_hash.clone(),
        })?;
    }
    Ok(())
}

/// Bytes available to the agent on the state directory's filesystem.
fn free_bytes(dir: &Path) -> Result<u64, FetchError> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(|e| FetchError::Io {
        path: dir.to_path_buf(),
        source: io::Error::from(e),
    })?;
    Ok((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// Builds `trees/.staging-<N>`, then renames it to `trees/<N>`, writes the manifest copy and
/// switches the `tree` link. Every step before the link switch is invisible.
///
/// A file the previous tree holds with the same hash and mode is hard-linked from it (and hashed
/// again); every other file is copied from the store, verified on the way. Fetched trees are
/// read-only by contract, so generations may share those inodes.
fn materialise(
    dirs: &FetchDirs,
    store: &ContentStore,
    manifest: &Manifest,
    previous: Option<&LocalTree>,
) -> Result<PathBuf, FetchError> {
    let generation = manifest.generation;
    let staging = dirs.trees().join(format!(".staging-{generation}"));
    let final_dir = dirs.trees().join(generation.to_string());
    for d in [&staging, &final_dir] {
        if d.exists() {
            fs::remove_dir_all(d).map_err(io_at(d))?;
        }
    }
    fs::create_dir(&staging).map_err(io_at(&staging))?;
    let guard = fsutil::DirGuard::new(staging.clone());
    let mut dir_modes = Vec::new();
    let mut copied = Vec::new();
    for e in &manifest.entries {
        // Paths were validated by the manifest parser: relative, normal, parents first.
        let dest = staging.join(&e.path);
        match e.kind {
            EntryKind::Dir => {
                fs::create_dir(&dest).map_err(io_at(&dest))?;
                dir_modes.push((dest, e.mode));
            }
            EntryKind::File => {
                if previous.is_some_and(|p| link_unchanged(p, e, &dest)) {
                    continue;
                }
                let sha = e.sha256.as_deref().unwrap_or_default();
                store.copy_out(sha, e.size.unwrap_or(0), &e.path, &dest)?;
                fs::set_permissions(&dest, fs::Permissions::from_mode(e.mode))
                    .map_err(io_at(&dest))?;
                copied.push(dest);
            }
        }
    }
    // Directory modes last, deepest first, so that a read-only directory does not stop its children.
    for (d, mode) in dir_modes.iter().rev() {
        fs::set_permissions(d, fs::Permissions::from_mode(*mode | 0o700)).map_err(io_at(d))?;
    }
    let mut new_dirs: Vec<PathBuf> = dir_modes.into_iter().map(|(d, _)| d).collect();
    new_dirs.push(staging.clone());
    sync_tree(&staging, &copied, &new_dirs)?;
    fs::rename(&staging, &final_dir).map_err(io_at(&final_dir))?;
    guard.keep();
    // Its fsync of trees/ also makes the rename above durable.
    let mpath = dirs.manifest_copy(generation);
    fsutil::atomic_write(&mpath, &manifest.to_bytes(), 0o600).map_err(io_at(&mpath))?;
    fsutil::atomic_symlink(Path::new(&format!("trees/{generation}")), &dirs.tree_link())
        .map_err(io_at(&dirs.tree_link()))?;
    Ok(final_dir)
}

/// Hard-links `e` from the previous tree when that tree holds it with the same hash and mode,
/// and the linked file still hashes right. False (and nothing left at `dest`) otherwise.
fn link_unchanged(previous: &LocalTree, e: &crate::manifest::Entry, dest: &Path) -> bool {
    let Some(old) = previous.manifest.entry(&e.path) else {
        return false;
    };
    if old.kind != EntryKind::File || old.sha256 != e.sha256 || old.mode != e.mode {
        return false;
    }
    let src = previous.tree.join(&e.path);
    let is_plain_file = fs::symlink_metadata(&src).is_ok_and(|m| m.file_type().is_file());
    if !is_plain_file || fs::hard_link(&src, dest).is_err() {
        return false;
    }
    let intact = fs::metadata(dest).is_ok_and(|m| m.permissions().mode() & 0o7777 == e.mode)
        && crate::hash::sha256_file(dest)
            .is_ok_and(|(h, n)| Some(&h) == e.sha256.as_ref() && Some(n) == e.size);
    if !intact {
        let _ = fs::remove_file(dest);
    }
    intact
}

/// Makes a materialised tree durable before it is swapped in (a crash after the swap must not
/// leave holes). Linked files are already durable; a few copied files are fsynced one by one,
/// many with one `syncfs` of the state filesystem (300 fsyncs took over a second).
fn sync_tree(root: &Path, copied: &[PathBuf], new_dirs: &[PathBuf]) -> Result<(), FetchError> {
    const FSYNC_AT_MOST: usize = 32;
    if copied.len() > FSYNC_AT_MOST {
        use std::os::fd::AsRawFd;
        let dir = fs::File::open(root).map_err(io_at(root))?;
        nix::unistd::syncfs(dir.as_raw_fd()).map_err(|e| io_at(root)(io::Error::from(e)))?;
        return Ok(());
    }
    for f in copied {
        fs::File::open(f)
            .and_then(|f| f.sync_all())
            .map_err(io_at(f))?;
    }
    for d in new_dirs.iter().rev() {
        fsutil::fsync_dir(d).map_err(io_at(d))?;
    }
    Ok(())
}

/// Keeps the newest trees and the store objects they use; failures here only waste space.
fn prune(dirs: &FetchDirs, store: &ContentStore, newest: u64) {
    let Ok(rd) = fs::read_dir(dirs.trees()) else {
        return;
    };
    let mut gens: Vec<u64> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect();
    gens.sort_unstable_by(|a, b| b.cmp(a));
    let keep: Vec<u64> = gens
        .iter()
        .copied()
        .filter(|g| *g <= newest)
        .take(KEEP_TREES)
        .collect();
    for g in gens.iter().filter(|g| !keep.contains(g)) {
        let _ = fs::remove_dir_all(dirs.trees().join(g.to_string()));
        let _ = fs::remove_file(dirs.manifest_copy(*g));
    }
    let manifests: Vec<Manifest> = keep
        .iter()
        .filter_map(|g| fs::read(dirs.manifest_copy(*g)).ok())
        .filter_map(|b| Manifest::parse(&b, "").ok())
        .collect();
    let wanted: HashSet<&str> = manifests
        .iter()
        .flat_map(|m| m.files().filter_map(|e| e.sha256.as_deref()))
        .collect();
    let _ = store.prune(&wanted);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{entries_of, walk_tree};
    use crate::source::FileSource;

    /// Lays out `gens/<N>/` from `src` the way a publication looks, and points `current` at it.
    fn publish(host_dir: &Path, src: &Path, generation: u64) -> Manifest {
        let walked = walk_tree(src, src).unwrap();
        let m = Manifest::new(
            "h",
            generation,
            "2026-01-01T00:00:00Z".into(),
            entries_of(&walked),
        );
        let g = host_dir.join(format!("gens/{generation}"));
        fs::create_dir_all(g.join("tree")).unwrap();
        for w in &walked {
            let dest = g.join("tree").join(&w.entry.path);
            match w.entry.kind {
                EntryKind::Dir => fs::create_dir_all(dest).unwrap(),
                EntryKind::File => {
                    fs::copy(&w.source, dest).unwrap();
                }
            }
        }
        fs::write(g.join("manifest.json"), m.to_bytes()).unwrap();
        fsutil::atomic_symlink(
            Path::new(&format!("gens/{generation}")),
            &host_dir.join("current"),
        )
        .unwrap();
        m
    }

    fn src_tree(files: usize) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("common")).unwrap();
        for i in 0..files {
            fs::write(
                d.path().join(format!("common/m{i}.nix")),
                format!("{{ x = {i}; }}\n"),
            )
            .unwrap();
        }
        fs::write(d.path().join("configuration.nix"), "{ }\n").unwrap();
        d
    }

    fn no_progress() -> impl FnMut(Progress) {
        |_| {}
    }

    #[test]
    fn second_sync_is_unchanged_and_a_one_file_change_fetches_one_file() {
        let src = src_tree(20);
        let server = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        publish(server.path(), src.path(), 1);
        let mut s = FileSource::new(server.path().to_path_buf());
        let first = sync(&mut s, state.path(), "h", &mut no_progress()).unwrap();
        let SyncOutcome::Fetched {
            downloaded_files,
            local,
            ..
        } = first
        else {
            panic!("expected a fetch, got {first:?}")
        };
        assert_eq!(downloaded_files, 21);
        assert_eq!(
            fs::read_to_string(local.tree.join("common/m3.nix")).unwrap(),
            "{ x = 3; }\n"
        );
        assert!(matches!(
            sync(&mut s, state.path(), "h", &mut no_progress()).unwrap(),
            SyncOutcome::Unchanged(l) if l.generation == 1
        ));
        fs::write(src.path().join("common/m3.nix"), "{ x = 33; }\n").unwrap();
        publish(server.path(), src.path(), 2);
        match sync(&mut s, state.path(), "h", &mut no_progress()).unwrap() {
            SyncOutcome::Fetched {
                downloaded_files,
                downloaded_bytes,
                local,
            } => {
                assert_eq!((downloaded_files, downloaded_bytes), (1, 12));
                assert_eq!(local.generation, 2);
                let t = state.path().join("tree/common/m3.nix");
                assert_eq!(fs::read_to_string(t).unwrap(), "{ x = 33; }\n");
            }
            other => panic!("expected a fetch, got {other:?}"),
        }
    }

    #[test]
    fn corrupted_file_on_server_is_refused_and_the_last_tree_stays() {
        let src = src_tree(3);
        let server = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        publish(server.path(), src.path(), 1);
        let mut s = FileSource::new(server.path().to_path_buf());
        sync(&mut s, state.path(), "h", &mut no_progress()).unwrap();
        fs::write(src.path().join("common/m1.nix"), "{ x = 11; }\n").unwrap();
        publish(server.path(), src.path(), 2);
        fs::write(
            server.path().join("gens/2/tree/common/m1.nix"),
            "{ x = 99; }\n",
        )
        .unwrap();
        let err = sync(&mut s, state.path(), "h", &mut no_progress()).unwrap_err();
        assert!(err.to_string().contains("common/m1.nix"), "{err}");
        assert!(err.to_string().contains("sha256"), "{err}");
        let local = FetchDirs::new(state.path()).local_tree().unwrap().unwrap();
        assert_eq!(local.generation, 1);
        assert_eq!(
            fs::read_to_string(state.path().join("tree/common/m1.nix")).unwrap(),
            "{ x = 1; }\n"
        );
    }

    #[test]
    fn a_damaged_store_object_is_caught_at_use_and_removed() {
        let src = src_tree(3);
        let server = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        publish(server.path(), src.path(), 1);
        let mut s = FileSource::new(server.path().to_path_buf());
        sync(&mut s, state.path(), "h", &mut no_progress()).unwrap();
        // Generation 2 adds a copy of m1 under a new name: its object comes from the store,
        // which is damaged.
        fs::copy(
            src.path().join("common/m1.nix"),
            src.path().join("common/n1.nix"),
        )
        .unwrap();
        let m2 = publish(server.path(), src.path(), 2);
        let sha = m2.entry("common/n1.nix").unwrap().sha256.clone().unwrap();
        let obj = state.path().join("store").join(&sha);
        fs::write(&obj, "{ x = 9; }\n").unwrap();
        let e = sync(&mut s, state.path(), "h", &mut no_progress()).unwrap_err();
        assert!(e.to_string().contains("common/n1.nix"), "{e}");
        assert!(!obj.exists());
        assert_eq!(
            FetchDirs::new(state.path())
                .local_tree()
                .unwrap()
                .unwrap()
                .generation,
            1
        );
        // The next sync fetches it again and completes.
        let out = sync(&mut s, state.path(), "h", &mut no_progress()).unwrap();
        assert!(
            matches!(
                out,
                SyncOutcome::Fetched {
                    downloaded_files: 1,
                    ..
                }
            ),
            "{out:?}"
        );
    }

    #[test]
    fn unchanged_files_are_linked_from_the_previous_tree_unless_it_was_altered() {
        use std::os::unix::fs::MetadataExt;
        let src = src_tree(3);
        let server = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        publish(server.path(), src.path(), 1);
        let mut s = FileSource::new(server.path().to_path_buf());
        sync(&mut s, state.path(), "h", &mut no_progress()).unwrap();
        // Someone edits the fetched copy of m2 in place.
        let t1 = state.path().join("trees/1");
        fs::write(t1.join("common/m2.nix"), "{ x = 666; }\n").unwrap();
        fs::write(src.path().join("common/m0.nix"), "{ x = 100; }\n").unwrap();
        publish(server.path(), src.path(), 2);
        sync(&mut s, state.path(), "h", &mut no_progress()).unwrap();
        let t2 = state.path().join("trees/2");
        let ino = |p: &Path| fs::metadata(p).unwrap().ino();
        // Unchanged and intact: the same inode. Changed or altered: a fresh, correct file.
        assert_eq!(
            ino(&t1.join("common/m1.nix")),
            ino(&t2.join("common/m1.nix"))
        );
        assert_ne!(
            ino(&t1.join("common/m2.nix")),
            ino(&t2.join("common/m2.nix"))
        );
        assert_eq!(
            fs::read_to_string(t2.join("common/m2.nix")).unwrap(),
            "{ x = 2; }\n"
        );
        assert_eq!(
            fs::read_to_string(t2.join("common/m0.nix")).unwrap(),
            "{ x = 100; }\n"
        );
    }

    #[test]
    fn manifest_for_another_host_is_refused() {
        let src = src_tree(1);
        let server = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        publish(server.path(), src.path(), 1);
        let mut s = FileSource::new(server.path().to_path_buf());
        let e = sync(&mut s, state.path(), "other", &mut no_progress()).unwrap_err();
        assert!(e.to_string().contains("for host \"h\""), "{e}");
        assert!(FetchDirs::new(state.path()).local_tree().unwrap().is_none());
    }

    #[test]
    fn a_path_through_a_symlink_on_the_server_is_refused_before_any_download() {
        let src = src_tree(3);
        let server = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        publish(server.path(), src.path(), 1);
        // The tree's `common` becomes a link to a directory with the same content elsewhere.
        let g = server.path().join("gens/1/tree");
        fs::rename(g.join("common"), server.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(server.path().join("elsewhere"), g.join("common")).unwrap();
        let mut s = FileSource::new(server.path().to_path_buf());
        let e = sync(&mut s, state.path(), "h", &mut no_progress()).unwrap_err();
        assert!(e.to_string().contains("through a symlink"), "{e}");
        assert!(FetchDirs::new(state.path()).local_tree().unwrap().is_none());
        assert_eq!(fs::read_dir(state.path().join("store")).unwrap().count(), 0);
    }

    #[test]
    fn a_manifest_promising_more_than_the_free_disk_is_refused_before_any_download() {
        let src = src_tree(1);
        let server = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let mut m = publish(server.path(), src.path(), 1);
        // 4096 files of 1 GiB each: every one within the per-file cap, their sum beyond any disk.
        let sha = crate::hash::sha256_bytes(b"x");
        for i in 0..4096 {
            m.entries.push(crate::manifest::Entry::file(
                format!("z{i:05}"),
                0o644,
                crate::manifest::MAX_FILE_SIZE,
                sha.clone(),
            ));
        }
        m.tree_hash = crate::manifest::tree_hash(&m.entries);
        fs::write(server.path().join("gens/1/manifest.json"), m.to_bytes()).unwrap();
        let mut s = FileSource::new(server.path().to_path_buf());
        let e = sync(&mut s, state.path(), "h", &mut no_progress()).unwrap_err();
        assert!(
            e.to_string().contains("are free; nothing downloaded"),
            "{e}"
        );
        assert_eq!(fs::read_dir(state.path().join("store")).unwrap().count(), 0);
    }

    /// Signs the published manifest of `generation` with `key`.
    fn sign_published(host_dir: &Path, generation: u64, key: &crate::sign::SecretKey) {
        let p = host_dir.join(format!("gens/{generation}/manifest.json"));
        let mut m = Manifest::parse(&fs::read(&p).unwrap(), "m").unwrap();
        key.sign_manifest(&mut m);
        fs::write(&p, m.to_bytes()).unwrap();
    }

    fn trusting(key: &crate::sign::SecretKey, applied: Option<u64>) -> TrustPolicy {
        TrustPolicy {
            key: Some((key.public(), PathBuf::from("/etc/tiffin/fleet-signing.pub"))),
            applied_generation: applied,
            ..TrustPolicy::none()
        }
    }

    #[test]
    fn the_same_generation_number_with_another_tree_is_refused() {
        let key = crate::sign::SecretKey::generate().unwrap();
        let src = src_tree(2);
        let server = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        publish(server.path(), src.path(), 3);
        sign_published(server.path(), 3, &key);
        let mut s = FileSource::new(server.path().to_path_buf());
        let trust = trusting(&key, None);
        sync_trusted(&mut s, state.path(), "h", &trust, &mut no_progress()).unwrap();
        let verified = FetchDirs::new(state.path())
            .highest_verified()
            .unwrap()
            .unwrap();
        assert_eq!(verified.generation, 3);
        // The local tree is lost; the server (the admin's key, e.g. after a republish from
        // scratch) now shows other content under number 3.
        fs::remove_file(state.path().join("tree")).unwrap();
        fs::write(src.path().join("common/m0.nix"), "{ x = 7; }\n").unwrap();
        fs::remove_dir_all(server.path().join("gens/3")).unwrap();
        publish(server.path(), src.path(), 3);
        sign_published(server.path(), 3, &key);
        let e = sync_trusted(&mut s, state.path(), "h", &trust, &mut no_progress())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("generation 3 refused") && e.contains("under the same number"),
            "{e}"
        );
        assert!(FetchDirs::new(state.path()).local_tree().unwrap().is_none());
    }

    #[test]
    fn an_unsigned_local_copy_is_refused_once_a_key_is_trusted() {
        let key = crate::sign::SecretKey::generate().unwrap();
        let src = src_tree(1);
        let server = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        publish(server.path(), src.path(), 1);
        let mut s = FileSource::new(server.path().to_path_buf());
        sync(&mut s, state.path(), "h", &mut no_progress()).unwrap();
        // The key is configured afterwards: the unchanged generation is not signed.
        let trust = trusting(&key, Some(1));
        let e = sync_trusted(&mut s, state.path(), "h", &trust, &mut no_progress())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("1.manifest.json") && e.contains("not signed"),
            "{e}"
        );
        // Once the admin publishes it signed, it is accepted.
        sign_published(server.path(), 1, &key);
        fs::remove_file(state.path().join("tree")).unwrap();
        sync_trusted(&mut s, state.path(), "h", &trust, &mut no_progress()).unwrap();
        assert!(matches!(
            sync_trusted(&mut s, state.path(), "h", &trust, &mut no_progress()).unwrap(),
            SyncOutcome::Unchanged(l) if l.generation == 1
        ));
    }

    #[test]
    fn a_damaged_record_of_the_newest_verified_generation_stops_a_trusting_sync() {
        let key = crate::sign::SecretKey::generate().unwrap();
        let src = src_tree(1);
        let server = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        publish(server.path(), src.path(), 1);
        sign_published(server.path(), 1, &key);
        fs::write(state.path().join(VERIFIED_FILE), "{ not json").unwrap();
        let mut s = FileSource::new(server.path().to_path_buf());
        let e = sync_trusted(
            &mut s,
            state.path(),
            "h",
            &trusting(&key, None),
            &mut no_progress(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("verified.json"), "{e}");
        assert_eq!(fs::read_dir(state.path().join("store")).unwrap().count(), 0);
    }

    #[test]
    fn nothing_published_is_not_an_error() {
        let server = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let mut s = FileSource::new(server.path().to_path_buf());
        assert!(matches!(
            sync(&mut s, state.path(), "h", &mut no_progress()).unwrap(),
            SyncOutcome::NothingPublished
        ));
    }
}
