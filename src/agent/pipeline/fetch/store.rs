//! The agent's content store: every file it has fetched, named by its sha256, under
//! `<state_dir>/store/`. A file enters only after its size and hash were checked, so anything in
//! the store can be used without reading the server again (that is the delta sync).

use crate::fsutil;
use crate::hash::{self, Hasher};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub struct ContentStore {
    dir: PathBuf,
}

/// Why a download did not enter the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: expected {expected_size} bytes with sha256 {expected}, got {got_size} bytes with sha256 {got}; nothing applied")]
    Mismatch {
        path: String,
        expected: String,
        expected_size: u64,
        got: String,
        got_size: u64,
    },
    #[error("content store {dir}: {source}")]
    Io { dir: PathBuf, source: io::Error },
    /// Writing a copy out of the store (the new tree being staged) failed; the error names it.
    #[error("staging the new tree: {source}")]
    Stage { source: io::Error },
}

/// A writer that hashes and counts what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
    written: u64,
}

impl<W> HashingWriter<W> {
    /// Hashes and counts what is written to `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Hasher::new(),
            written: 0,
        }
    }

    /// The sha256 and the count of what was written.
    pub fn finish(self) -> (String, u64) {
        (self.hasher.finish(), self.written)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl ContentStore {
    /// Opens (creating) the store under the state directory.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let dir = state_dir.join("store");
        fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            dir: dir.clone(),
            source,
        })?;
        Ok(Self { dir })
    }

    /// The path of a stored object.
    pub fn path_of(&self, sha256: &str) -> PathBuf {
        self.dir.join(sha256)
    }

    /// True when the object is present.
    pub fn contains(&self, sha256: &str) -> bool {
        hash::is_sha256_hex(sha256) && self.path_of(sha256).is_file()
    }

    /// Stores what `fill` writes, provided it has exactly `size` bytes with hash `sha256`.
    /// `fill` gets a writer that hashes on the way; on a mismatch or error nothing is stored.
    pub fn insert_with<E: From<StoreError>>(
        &self,
        path_for_errors: &str,
        sha256: &str,
        size: u64,
        fill: impl FnOnce(&mut dyn Write) -> Result<(), E>,
    ) -> Result<(), E> {
        let io = |source| StoreError::Io {
            dir: self.dir.clone(),
            source,
        };
        let tmp = tempfile::Builder::new()
            .prefix(".incoming-")
            .tempfile_in(&self.dir)
            .map_err(io)?;
        let (got, got_size) = {
            let mut w = HashingWriter {
                inner: io::BufWriter::new(tmp.as_file()),
                hasher: Hasher::new(),
                written: 0,
            };
            fill(&mut w)?;
            w.flush().map_err(io)?;
            (w.hasher.finish(), w.written)
        };
        if got != sha256 || got_size != size {
            return Err(StoreError::Mismatch {
                path: path_for_errors.to_string(),
                expected: sha256.to_string(),
                expected_size: size,
                got,
                got_size,
            }
            .into());
        }
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(self.path_of(sha256)).map_err(|e| io(e.error))?;
        Ok(())
    }

    /// Copies an object to `dest` (a new file), checking its size and hash on the way: what the
    /// store holds is checked again at every use, so a damaged object (disk, crash, meddling)
    /// never reaches a tree. A damaged object is removed, so the next sync fetches it again.
    pub fn copy_out(
        &self,
        sha256: &str,
        size: u64,
        path_for_errors: &str,
        dest: &Path,
    ) -> Result<(), StoreError> {
        let io = |source| StoreError::Io {
            dir: self.dir.clone(),
            source,
        };
        let obj = self.path_of(sha256);
        let mut src = fs::File::open(&obj).map_err(|e| io(fsutil::with_path(e, &obj)))?;
        let stage = |e| StoreError::Stage {
            source: fsutil::with_path(e, dest),
        };
        let out = fsutil::create_new(dest, 0o600).map_err(|source| StoreError::Stage { source })?;
        let mut w = HashingWriter {
            inner: io::BufWriter::new(out),
            hasher: Hasher::new(),
            written: 0,
        };
        // A store object is a small local file that was just opened: a failure here is the
        // destination's (a full disk, above all).
        io::copy(&mut src, &mut w).map_err(stage)?;
        w.flush().map_err(stage)?;
        let (got, got_size) = (w.hasher.finish(), w.written);
        if got != sha256 || got_size != size {
            let _ = fs::remove_file(&obj);
            return Err(StoreError::Mismatch {
                path: format!(
                    "{path_for_errors} (local copy {}, now removed)",
                    obj.display()
                ),
                expected: sha256.to_string(),
                expected_size: size,
                got,
                got_size,
            });
        }
        Ok(())
    }

    /// Removes every object not in `keep`, and leftovers of interrupted downloads.
    pub fn prune(&self, keep: &std::collections::HashSet<&str>) -> Result<usize, StoreError> {
        let mut removed = 0;
        let rd = fs::read_dir(&self.dir).map_err(|source| StoreError::Io {
            dir: self.dir.clone(),
            source,
        })?;
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if !keep.contains(name.as_ref()) && fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        }
        let _ = fsutil::fsync_dir(&self.dir);
        Ok(removed)
    }
}
