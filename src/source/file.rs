//! `file:///path`: a publication on a local disk (the embedded default for demos and tests).

use super::{check_log_name, parse_current_target, Source, SourceError};
use crate::fsutil;
use crate::publication::layout::{self, CURRENT};
use std::fs;
use std::io::{self, Read, Write};
use std::path::PathBuf;

pub struct FileSource {
    root: PathBuf,
}

impl FileSource {
    /// A source reading the host directory `root` (the one holding `current`).
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    fn place(&self, rel: &str) -> String {
        format!("{}", self.root.join(rel).display())
    }

    fn map_io(&self, rel: &str, e: io::Error) -> SourceError {
        let place = self.place(rel);
        match e.kind() {
            io::ErrorKind::NotFound => SourceError::NotFound { place },
            io::ErrorKind::PermissionDenied => SourceError::Permission { place },
            _ => SourceError::Io { place, source: e },
        }
    }
}

/// Copies at most `limit` bytes; one byte more is an error.
pub(crate) fn copy_bounded(
    r: &mut dyn Read,
    out: &mut dyn Write,
    limit: u64,
    place: &str,
) -> Result<u64, SourceError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(SourceError::Io {
                    place: place.into(),
                    source: e,
                })
            }
        };
        n += k as u64;
        if n > limit {
            return Err(SourceError::TooLarge {
                place: place.into(),
                limit,
            });
        }
        out.write_all(&buf[..k]).map_err(|e| SourceError::Io {
            place: place.into(),
            source: e,
        })?;
    }
}

impl Source for FileSource {
    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn current_generation(&mut self) -> Result<Option<u64>, SourceError> {
        match fs::read_link(self.root.join(CURRENT)) {
            Ok(t) => parse_current_target(&t.to_string_lossy(), &self.place(CURRENT)).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // No `current` yet: nothing published, as long as the host directory exists.
                fs::metadata(&self.root).map_err(|e| self.map_io("", e))?;
                Ok(None)
            }
            Err(e) => Err(self.map_io(CURRENT, e)),
        }
    }

    fn read_manifest(&mut self, generation: u64, limit: u64) -> Result<Vec<u8>, SourceError> {
        let rel = layout::manifest_rel(generation);
        let mut f = fs::File::open(self.root.join(&rel)).map_err(|e| self.map_io(&rel, e))?;
        let mut v = Vec::new();
        copy_bounded(&mut f, &mut v, limit, &self.place(&rel))?;
        Ok(v)
    }

    fn read_file(
        &mut self,
        generation: u64,
        path: &str,
        out: &mut dyn Write,
        limit: u64,
    ) -> Result<u64, SourceError> {
        let rel = layout::tree_rel(generation, path);
        let mut f = fs::File::open(self.root.join(&rel)).map_err(|e| self.map_io(&rel, e))?;
        copy_bounded(&mut f, out, limit, &self.place(&rel))
    }

    fn read_cache_file(
        &mut self,
        generation: u64,
        name: &str,
        out: &mut dyn Write,
        limit: u64,
    ) -> Result<u64, SourceError> {
        let rel = layout::cache_rel(generation, name);
        let full = self.root.join(&rel);
        // Nothing under the host's directory is a symlink but `current`.
        let mut at = self.root.clone();
        for part in std::path::Path::new(&rel).components() {
            at.push(part);
            let meta = fs::symlink_metadata(&at).map_err(|e| self.map_io(&rel, e))?;
            if meta.file_type().is_symlink() {
                return Err(SourceError::Layout {
                    place: self.place(&rel),
                    why: format!("{} is a symlink; a published cache has none", at.display()),
                });
            }
        }
        let mut f = fs::File::open(&full).map_err(|e| self.map_io(&rel, e))?;
        copy_bounded(&mut f, out, limit, &self.place(&rel))
    }

    fn check_tree_path(&mut self, generation: u64, path: &str) -> Result<(), SourceError> {
        let mut at = self.root.join(layout::tree_dir_rel(generation));
        for part in path.split('/') {
            at.push(part);
            let meta = fs::symlink_metadata(&at).map_err(|e| {
                let rel = at.strip_prefix(&self.root).unwrap_or(&at);
                self.map_io(&rel.to_string_lossy(), e)
            })?;
            if meta.file_type().is_symlink() {
                return Err(SourceError::Layout {
                    place: at.display().to_string(),
                    why: format!("{path} goes through a symlink here; a published tree has none"),
                });
            }
        }
        Ok(())
    }

    fn upload_log(&mut self, name: &str, data: &[u8]) -> Result<(), SourceError> {
        check_log_name(name)?;
        let rel = layout::log_rel(name);
        fsutil::atomic_write(&self.root.join(&rel), data, 0o600).map_err(|e| self.map_io(&rel, e))
    }
}
