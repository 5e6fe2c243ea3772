//! A new generation: written as `gens/.incoming-<N>-<pid>/` (the tree, then the manifest, signed
//! when the fleet has a key), made durable, renamed to `gens/<N>`, and only then linked from
//! `current` in one rename, and `current.txt` (the same target as a file, for HTTP readers)
//! replaced by one more rename right after. Any failure before the switch removes the incoming
//! directory and leaves `current` where it was.

use super::cache::{cache_dir, CachePool};
use super::outcome::{HostError, GEN_DIR_MODE, GEN_FILE_MODE, HOST_DIR_MODE, LOGS_MODE};
use super::prune::PRUNING_PREFIX;
use super::stage::{materialize, set_owner_mode, Modes, Reuse};
use crate::fleet::users::Ownership;
use crate::fsutil::{self, with_path, DirGuard};
use crate::manifest::cache::CacheIndex;
use crate::manifest::{Entry, Manifest, WalkedEntry, MANIFEST_FILE, MAX_MANIFEST_BYTES};
use crate::publication::{Publication, INCOMING_PREFIX, TREE};
use crate::sign::SecretKey;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What one new generation holds.
pub(super) struct NewGeneration<'a> {
    pub host: &'a str,
    pub generation: u64,
    pub walked: &'a [WalkedEntry],
    pub entries: Vec<Entry>,
    pub expected_system: Option<String>,
    /// The admin's change note (`publish -m`).
    pub note: Option<String>,
    /// The closure diff's summary against the previous expected system (`--build`).
    pub changes: Option<crate::manifest::Changes>,
    pub signer: Option<&'a SecretKey>,
    pub owner: Ownership,
    /// The host's binary cache (`publish --build`) and the pool its files are linked from.
    pub cache: Option<(CacheIndex, &'a CachePool)>,
    /// Set when the tree's files/ and files.toml are sealed.
    pub sealed: Option<crate::manifest::Sealed>,
    pub release: Option<String>,
}

/// Writes `new` beside the live generation `current` (whose unchanged files it hard-links) and
/// switches `current` to it.
pub(super) fn write_and_switch(
    publication: &Publication,
    new: NewGeneration,
    current: Option<&Manifest>,
) -> Result<(), HostError> {
    let (generation, new_owner) = (new.generation, new.owner);
    ensure_skeleton(publication, new.owner)?;
    remove_stale_incoming(publication);
    let final_dir = write_generation(publication, new, current)?;
    let switched = fsutil::fsync_dir(&publication.gens()).and_then(|()| {
        fsutil::atomic_symlink(
            &Publication::link_target(generation),
            &publication.current_link(),
        )
    });
    if let Err(e) = switched {
        let _ = fs::remove_dir_all(&final_dir);
        return Err(e.into());
    }
    write_current_txt(publication, generation, new_owner)?;
    Ok(())
}

/// Rewrites `current.txt` when it does not name `generation` (a publication from before it
/// existed, or a publish stopped between the two renames).
pub(super) fn ensure_current_txt(
    publication: &Publication,
    generation: u64,
    owner: Ownership,
) -> io::Result<()> {
    let want = crate::publication::layout::current_txt_body(generation);
    match fs::read_to_string(publication.current_txt()) {
        Ok(have) if have == want => Ok(()),
        _ => write_current_txt(publication, generation, owner),
    }
}

/// `current.txt`: `gens/<N>\n`, written to a temporary file and renamed over the old one, so a
/// reader sees the old or the new content, never none or half. Readable like a generation's
/// files (root, the host's group), so a web server serving it needs what it needs for `gens/`.
pub(super) fn write_current_txt(
    publication: &Publication,
    generation: u64,
    owner: Ownership,
) -> io::Result<()> {
    let path = publication.current_txt();
    let body = crate::publication::layout::current_txt_body(generation);
    // Web servers derive ETag and Last-Modified from the mtime in seconds and the size: a new
    // content of the same size within the same second must still get a later mtime.
    let before = fs::metadata(&path).and_then(|m| m.modified()).ok();
    fsutil::atomic_write_with(&path, GEN_FILE_MODE, |f| {
        if let Some((uid, gid)) = owner.tree() {
            std::os::unix::fs::fchown(&*f, Some(uid), Some(gid))?;
        }
        io::Write::write_all(f, body.as_bytes())?;
        if let Some(later) = before.and_then(|b| later_second(b, SystemTime::now())) {
            f.set_modified(later)?;
        }
        Ok(())
    })
}

/// Writes the generation into an incoming directory and renames it to `gens/<N>`, returning
/// that path. On failure nothing is left under `gens/`.
fn write_generation(
    publication: &Publication,
    new: NewGeneration,
    current: Option<&Manifest>,
) -> Result<PathBuf, HostError> {
    let (generation, owner) = (new.generation, new.owner);
    let incoming = publication.gens().join(format!(
        "{INCOMING_PREFIX}{generation}-{}",
        std::process::id()
    ));
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&incoming)
        .map_err(|e| with_path(e, &incoming))?;
    let guard = DirGuard::new(incoming.clone());

    let reuse = current.map(|m| Reuse::new(publication.generation_dir(m.generation).join(TREE), m));
    materialize(
        new.walked,
        &incoming.join(TREE),
        Modes::Publication,
        owner,
        reuse.as_ref(),
    )?;
    if let Some((index, pool)) = &new.cache {
        pool.link_into(index, &cache_dir(&incoming), owner.tree())?;
    }
    let bytes = manifest_bytes(new)?;
    let manifest_path = incoming.join(MANIFEST_FILE);
    fsutil::atomic_write(&manifest_path, &bytes, GEN_FILE_MODE)?;
    set_owner_mode(&manifest_path, owner.tree(), GEN_FILE_MODE)?;
    set_owner_mode(&incoming, owner.tree(), GEN_DIR_MODE)?;
    sync_filesystem(&incoming)?;

    let final_dir = publication.generation_dir(generation);
    fs::rename(&incoming, &final_dir).map_err(|e| with_path(e, &final_dir))?;
    guard.keep();
    Ok(final_dir)
}

/// The new generation's manifest, signed when there is a key, validated and within the size
/// agents read.
fn manifest_bytes(new: NewGeneration) -> io::Result<Vec<u8>> {
    let host = new.host;
    let mut manifest = Manifest::new(host, new.generation, now_rfc3339(), new.entries);
    manifest.expected_system = new.expected_system;
    manifest.cache = new.cache.map(|(index, _)| index);
    manifest.sealed = new.sealed;
    manifest.note = new.note;
    manifest.changes = new.changes;
    manifest.release = new.release;
    if let Some(k) = new.signer {
        k.sign_manifest(&mut manifest);
    }
    manifest
        .validate(&format!("new manifest of {host}"))
        .map_err(|e| io::Error::other(e.to_string()))?;
    let bytes = manifest.to_bytes();
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(io::Error::other(format!(
            "the manifest of {host} would be {} bytes, more than the {MAX_MANIFEST_BYTES} agents read; split the host's tree",
            bytes.len()
        )));
    }
    Ok(bytes)
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// `<chroot>/<host>/` root 0755, `gens/` root 0755, `logs/` and `backup/` the host's user 0700; created when
/// missing and corrected when wrong, untouched when right.
pub(super) fn ensure_skeleton(p: &Publication, owner: Ownership) -> io::Result<()> {
    for (dir, ids, mode) in [
        (p.dir.clone(), owner.root(), HOST_DIR_MODE),
        (p.gens(), owner.root(), HOST_DIR_MODE),
        (p.logs(), owner.logs(), LOGS_MODE),
        // The host's restic repository: the host's alone, like logs/.
        (p.backup(), owner.logs(), LOGS_MODE),
    ] {
        match fs::DirBuilder::new().mode(mode).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(with_path(e, &dir)),
        }
        set_owner_mode(&dir, ids, mode)?;
    }
    Ok(())
}

/// Generations a crashed run left half-written or half-deleted, and the temporary link it was
/// about to rename over `current` (we hold the lock, so none is in progress).
pub(super) fn remove_stale_incoming(p: &Publication) {
    if let Ok(rd) = fs::read_dir(p.gens()) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(INCOMING_PREFIX) || name.starts_with(PRUNING_PREFIX) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    // `fsutil::atomic_symlink` names it `.current.<pid>.tmp`.
    if let Ok(rd) = fs::read_dir(&p.dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_link = e.file_type().is_ok_and(|t| t.is_symlink());
            if is_link && name.starts_with(".current.") && name.ends_with(".tmp") {
                let _ = fs::remove_file(e.path());
            }
            // `fsutil::atomic_write` names it `.current.txt.<random>.tmp`.
            if !is_link && name.starts_with(".current.txt.") && name.ends_with(".tmp") {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// The whole second after `before` when `now` is not in a later second than it.
fn later_second(before: SystemTime, now: SystemTime) -> Option<SystemTime> {
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    (secs(now) <= secs(before))
        .then(|| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs(before) + 1))
}

/// Makes everything written on the generation's filesystem durable with one syncfs(2), instead of
/// one fsync per file: a 300-file generation costs one flush.
fn sync_filesystem(dir: &Path) -> io::Result<()> {
    let f = File::open(dir).map_err(|e| with_path(e, dir))?;
    nix::unistd::syncfs(f.as_raw_fd()).map_err(|e| with_path(io::Error::from(e), dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{entries_of, walk_tree};

    /// A host tree with one file, walked.
    fn host_tree(root: &Path, body: &str) -> Vec<WalkedEntry> {
        let src = root.join("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("configuration.nix"), body).unwrap();
        walk_tree(&src, root).unwrap()
    }

    fn new_gen<'a>(walked: &'a [WalkedEntry], generation: u64) -> NewGeneration<'a> {
        NewGeneration {
            host: "laptop",
            generation,
            walked,
            entries: entries_of(walked),
            expected_system: None,
            note: None,
            changes: None,
            signer: None,
            owner: Ownership::Publisher,
            cache: None,
            sealed: None,
            release: None,
        }
    }

    #[test]
    fn a_written_generation_is_live_and_leaves_no_incoming_directory() {
        let t = tempfile::tempdir().unwrap();
        let p = Publication::new(&t.path().join("chroot"), "laptop");
        fs::create_dir_all(t.path().join("chroot")).unwrap();
        let walked = host_tree(t.path(), "{ }\n");
        write_and_switch(&p, new_gen(&walked, 1), None).unwrap();
        assert_eq!(p.current_generation().unwrap(), Some(1));
        let live = p.current_manifest().unwrap().unwrap();
        assert_eq!(live.host, "laptop");

        let walked2 = host_tree(t.path(), "{ x = 1; }\n");
        write_and_switch(&p, new_gen(&walked2, 2), Some(&live)).unwrap();
        assert_eq!(p.current_generation().unwrap(), Some(2));
        assert_eq!(fs::read_to_string(p.current_txt()).unwrap(), "gens/2\n");
        fs::remove_file(p.current_txt()).unwrap();
        ensure_current_txt(&p, 2, Ownership::Publisher).unwrap();
        assert_eq!(fs::read_to_string(p.current_txt()).unwrap(), "gens/2\n");
        // Rewritten within the same second, same size: still a later mtime (a new ETag).
        let mtime = |p: &Publication| fs::metadata(p.current_txt()).unwrap().modified().unwrap();
        let before = mtime(&p);
        write_current_txt(&p, 3, Ownership::Publisher).unwrap();
        let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        assert!(secs(mtime(&p)) > secs(before));
        let names: Vec<_> = fs::read_dir(p.gens())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    }

    #[test]
    fn a_failed_write_leaves_current_where_it_was() {
        let t = tempfile::tempdir().unwrap();
        let p = Publication::new(&t.path().join("chroot"), "laptop");
        fs::create_dir_all(t.path().join("chroot")).unwrap();
        let walked = host_tree(t.path(), "{ }\n");
        write_and_switch(&p, new_gen(&walked, 1), None).unwrap();
        // The source changes between the walk and the copy: the copy refuses it.
        let walked2 = host_tree(t.path(), "{ x = 1; }\n");
        fs::write(t.path().join("src/configuration.nix"), "{ y = 2; }\n").unwrap();
        let e = write_and_switch(&p, new_gen(&walked2, 2), None).unwrap_err();
        assert!(
            e.to_string()
                .contains("changed while it was being published"),
            "{e}"
        );
        assert_eq!(p.current_generation().unwrap(), Some(1));
        assert_eq!(p.generations().unwrap(), [1]);
        assert_eq!(
            fs::read_dir(p.gens()).unwrap().count(),
            1,
            "no incoming left"
        );
    }

    #[test]
    fn leftovers_of_a_crashed_run_are_removed_and_generations_kept() {
        let t = tempfile::tempdir().unwrap();
        let p = Publication::new(t.path(), "laptop");
        for d in ["gens/3", "gens/.incoming-4-99", "gens/.pruning-1-99"] {
            fs::create_dir_all(p.dir.join(d)).unwrap();
        }
        std::os::unix::fs::symlink("gens/3", p.dir.join(".current.99.tmp")).unwrap();
        fs::write(p.dir.join(".current.notes.tmp"), "a file, not a link").unwrap();
        remove_stale_incoming(&p);
        let mut names: Vec<_> = fs::read_dir(p.gens())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["3"]);
        assert!(!p.dir.join(".current.99.tmp").exists());
        assert!(p.dir.join(".current.notes.tmp").exists());
    }

    #[test]
    fn the_manifest_is_signed_when_the_fleet_has_a_key() {
        let t = tempfile::tempdir().unwrap();
        let walked = host_tree(t.path(), "{ }\n");
        let key = SecretKey::generate().unwrap();
        let mut new = new_gen(&walked, 1);
        new.signer = Some(&key);
        let bytes = manifest_bytes(new).unwrap();
        let m = Manifest::parse(&bytes, "test").unwrap();
        key.public().verify_manifest(&m).unwrap();
        let unsigned =
            Manifest::parse(&manifest_bytes(new_gen(&walked, 1)).unwrap(), "test").unwrap();
        assert!(key.public().verify_manifest(&unsigned).is_err());
    }
}
