//! Uploads that must not be lost: reports, logs and `seen.json` go through an on-disk queue
//! under `<state_dir>/outbox/` and are sent at the next contact with the server.

use crate::fsutil;
use crate::source::{check_log_name, Source, SourceError};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    pub fn open(state_dir: &Path) -> io::Result<Self> {
        let dir = state_dir.join("outbox");
        fs::create_dir_all(&dir).map_err(|e| fsutil::with_path(e, &dir))?;
        Ok(Self { dir })
    }

    /// Queues `logs/<name>` for upload (replacing a queued file of the same name).
    pub fn enqueue(&self, name: &str, data: &[u8]) -> Result<(), SourceError> {
        check_log_name(name)?;
        let p = self.dir.join(name);
        fsutil::atomic_write(&p, data, 0o600).map_err(|source| SourceError::Io {
            place: p.display().to_string(),
            source,
        })
    }

    /// The queued names, oldest name first (report names start with their UTC time).
    pub fn pending(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| check_log_name(n).is_ok())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Sends every queued file; each one sent is removed from the queue. Stops at the first
    /// failure (the rest stays queued) and returns how many were sent.
    pub fn flush(&self, source: &mut dyn Source) -> Result<usize, SourceError> {
        let mut sent = 0;
        for name in self.pending() {
            let p = self.dir.join(&name);
            let data = fs::read(&p).map_err(|source| SourceError::Io {
                place: p.display().to_string(),
                source,
            })?;
            source.upload_log(&name, &data)?;
            let _ = fs::remove_file(&p);
            sent += 1;
        }
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::FileSource;

    #[test]
    fn queued_reports_survive_a_failed_upload_and_go_out_later() {
        let state = tempfile::tempdir().unwrap();
        let server = tempfile::tempdir().unwrap();
        let ob = Outbox::open(state.path()).unwrap();
        ob.enqueue("2026-01-01T00:00:00Z-g1-updated.json", b"{}")
            .unwrap();
        // No logs/ directory yet: the upload fails and the report stays queued.
        let mut src = FileSource::new(server.path().to_path_buf());
        assert!(ob.flush(&mut src).is_err());
        assert_eq!(ob.pending().len(), 1);
        fs::create_dir(server.path().join("logs")).unwrap();
        assert_eq!(ob.flush(&mut src).unwrap(), 1);
        assert!(ob.pending().is_empty());
        assert_eq!(
            fs::read(
                server
                    .path()
                    .join("logs/2026-01-01T00:00:00Z-g1-updated.json")
            )
            .unwrap(),
            b"{}"
        );
    }
}
