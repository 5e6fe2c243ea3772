//! One host's upload: list what the bucket has, upload what it lacks (files, then each
//! generation's manifest), switch `current.txt`, delete the generations pruned locally.

use super::reuse::Reuse;
use super::{PushError, S3Target, CURRENT_TXT};
use crate::manifest::MANIFEST_FILE;
use crate::publication::{Publication, GENS};
use futures_util::TryStreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectStore, PutPayload, WriteMultipart};
use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Files larger than this go up in parts.
const SINGLE_PUT_MAX: u64 = 16 << 20;
/// The size of each part of a multipart upload.
const PART: usize = 8 << 20;

/// How one host is uploaded.
#[derive(Clone, Debug)]
pub struct PushOptions {
    /// Count what would be uploaded and deleted; change nothing.
    pub dry_run: bool,
    /// Uploads in flight at once.
    pub jobs: usize,
}

impl Default for PushOptions {
    fn default() -> Self {
        Self {
            dry_run: false,
            jobs: 8,
        }
    }
}

/// What one host's upload did (or, with `dry_run`, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PushSummary {
    /// The live generation `current.txt` names afterwards (`None`: nothing published yet).
    pub generation: Option<u64>,
    /// Objects uploaded (files, manifests and `current.txt`).
    pub uploaded: usize,
    pub uploaded_bytes: u64,
    /// Objects copied inside the bucket from an unchanged file of an earlier generation.
    pub copied: usize,
    /// Objects the bucket already had.
    pub present: usize,
    /// Objects of pruned generations deleted.
    pub deleted: usize,
}

/// A file of a live generation and its key.
struct LocalFile {
    path: PathBuf,
    key: Key,
    size: u64,
    /// An object in the bucket with the same content: copied from there instead.
    copy_from: Option<Key>,
}

/// Uploads the publication in `local_host_dir` (`<chroot>/<host>`) to `<prefix>/<host_path>/`.
/// Blocking (a runtime of its own): call it from a plain thread, not from async code.
pub fn push_host(
    target: &S3Target,
    host_path: &str,
    local_host_dir: &Path,
    opts: &PushOptions,
) -> Result<PushSummary, PushError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(PushError::Runtime)?;
    rt.block_on(push(target, host_path, local_host_dir, opts))
}

async fn push(
    target: &S3Target,
    host_path: &str,
    dir: &Path,
    opts: &PushOptions,
) -> Result<PushSummary, PushError> {
    let publication = Publication {
        dir: dir.to_path_buf(),
    };
    let Some(current) = publication.current_generation()? else {
        return Ok(PushSummary::default());
    };
    let live: BTreeSet<u64> = publication
        .generations()
        .map_err(|source| local(&publication.gens(), source))?
        .into_iter()
        .collect();
    let mut summary = PushSummary {
        generation: Some(current),
        ..PushSummary::default()
    };
    let remote = list(target, host_path).await?;
    let reuse = Reuse::new(target, host_path, dir, &live, &remote).await;
    let mut files = Vec::new();
    let mut manifests = Vec::new();
    for &n in &live {
        for mut f in local_files(target, host_path, dir, n)? {
            if remote.get(&f.key) == Some(&f.size) {
                summary.present += 1;
            } else if f.key.filename() == Some(MANIFEST_FILE) {
                manifests.push(f);
            } else {
                f.copy_from = reuse.source_for(&f.key).cloned();
                files.push(f);
            }
        }
    }
    // A generation's manifest only once all its files are there, `current.txt` only after all.
    for batch in [files, manifests] {
        for f in &batch {
            if f.copy_from.is_some() {
                summary.copied += 1;
            } else {
                summary.uploaded += 1;
                summary.uploaded_bytes += f.size;
            }
        }
        if !opts.dry_run {
            upload_all(target, batch, opts.jobs).await?;
        }
    }
    if switch_current(target, host_path, current, opts.dry_run).await? {
        summary.uploaded += 1;
        summary.uploaded_bytes += format!("{GENS}/{current}\n").len() as u64;
    } else {
        summary.present += 1;
    }
    let gens_prefix = format!("{}/", target.key(host_path, GENS));
    for key in remote.keys() {
        let generation = key.as_ref().strip_prefix(&gens_prefix).and_then(|r| {
            let n = r.split('/').next()?;
            n.parse::<u64>().ok()
        });
        if generation.is_some_and(|n| !live.contains(&n)) {
            summary.deleted += 1;
            if !opts.dry_run {
                let r = target.store.delete(key).await;
                r.map_err(|e| {
                    store_error(target, key.as_ref(), "delete (a pruned generation)", e)
                })?;
            }
        }
    }
    Ok(summary)
}

fn local(path: &Path, source: std::io::Error) -> PushError {
    PushError::Local {
        path: path.to_path_buf(),
        source,
    }
}

fn store_error(
    target: &S3Target,
    key: &str,
    what: &'static str,
    e: object_store::Error,
) -> PushError {
    PushError::Store {
        endpoint: target.endpoint.clone(),
        bucket: target.bucket.clone(),
        key: key.to_string(),
        what,
        source: Box::new(e),
    }
}

/// Every object under the host's `gens/`, with its size.
async fn list(target: &S3Target, host_path: &str) -> Result<HashMap<Key, u64>, PushError> {
    let gens = target.key(host_path, GENS);
    let prefix = Key::parse(&gens).map_err(|e| bad_name(&gens, e))?;
    let metas: Vec<object_store::ObjectMeta> = target
        .store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| store_error(target, &gens, "list", e))?;
    Ok(metas.into_iter().map(|m| (m.location, m.size)).collect())
}

fn bad_name(name: &str, e: object_store::path::Error) -> PushError {
    PushError::BadName {
        path: name.to_string(),
        why: e.to_string(),
    }
}

/// The regular files of generation `n`, with their keys.
fn local_files(
    target: &S3Target,
    host_path: &str,
    dir: &Path,
    n: u64,
) -> Result<Vec<LocalFile>, PushError> {
    let rel_root = format!("{GENS}/{n}");
    let mut out = Vec::new();
    let mut todo = vec![(dir.join(&rel_root), rel_root)];
    while let Some((path, rel)) = todo.pop() {
        for entry in fs::read_dir(&path).map_err(|e| local(&path, e))? {
            let entry = entry.map_err(|e| local(&path, e))?;
            let p = entry.path();
            let name = entry.file_name();
            let name = name.to_str().ok_or_else(|| PushError::BadName {
                path: p.display().to_string(),
                why: "not UTF-8".into(),
            })?;
            let rel = format!("{rel}/{name}");
            let meta = fs::symlink_metadata(&p).map_err(|e| local(&p, e))?;
            if meta.is_dir() {
                todo.push((p, rel));
            } else if meta.is_file() {
                let key = target.key(host_path, &rel);
                let key = Key::parse(&key).map_err(|e| bad_name(&p.display().to_string(), e))?;
                out.push(LocalFile {
                    path: p,
                    key,
                    size: meta.len(),
                    copy_from: None,
                });
            } else {
                let why = std::io::Error::other("neither a file nor a directory");
                return Err(local(&p, why));
            }
        }
    }
    Ok(out)
}

/// Uploads `files`, `jobs` at a time; the first failure stops the rest.
async fn upload_all(
    target: &S3Target,
    files: Vec<LocalFile>,
    jobs: usize,
) -> Result<(), PushError> {
    let mut set = tokio::task::JoinSet::new();
    let mut pending = files.into_iter();
    loop {
        while set.len() < jobs.max(1) {
            let Some(f) = pending.next() else { break };
            let store = Arc::clone(&target.store);
            set.spawn(async move {
                let r = upload(store.as_ref(), &f).await;
                (f, r)
            });
        }
        let Some(done) = set.join_next().await else {
            return Ok(());
        };
        let (f, r) = done.map_err(|e| PushError::Runtime(std::io::Error::other(e)))?;
        match r {
            Ok(()) => {}
            Err(Upload::Local(e)) => return Err(local(&f.path, e)),
            Err(Upload::Store(e)) => return Err(store_error(target, f.key.as_ref(), "upload", e)),
        }
    }
}

enum Upload {
    Local(std::io::Error),
    Store(object_store::Error),
}

/// One file: a single PUT, or a multipart upload when it is large.
async fn upload(store: &dyn ObjectStore, f: &LocalFile) -> Result<(), Upload> {
    if let Some(from) = &f.copy_from {
        return store.copy(from, &f.key).await.map_err(Upload::Store);
    }
    if f.size <= SINGLE_PUT_MAX {
        let data = fs::read(&f.path).map_err(Upload::Local)?;
        store
            .put(&f.key, PutPayload::from(data))
            .await
            .map_err(Upload::Store)?;
        return Ok(());
    }
    let mut file = fs::File::open(&f.path).map_err(Upload::Local)?;
    let parts = store.put_multipart(&f.key).await.map_err(Upload::Store)?;
    let mut writer = WriteMultipart::new_with_chunk_size(parts, PART);
    let mut buf = vec![0u8; PART];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(Upload::Local(e));
            }
        };
        if let Err(e) = writer.wait_for_capacity(2).await {
            return Err(Upload::Store(e));
        }
        writer.write(&buf[..n]);
    }
    writer.finish().await.map_err(Upload::Store)?;
    Ok(())
}

/// Writes `current.txt` = `gens/<N>\n` unless it already says so; whether it was written.
async fn switch_current(
    target: &S3Target,
    host_path: &str,
    current: u64,
    dry_run: bool,
) -> Result<bool, PushError> {
    let name = target.key(host_path, CURRENT_TXT);
    let key = Key::parse(&name).map_err(|e| bad_name(&name, e))?;
    let want = format!("{GENS}/{current}\n");
    let have = match target.store.get(&key).await {
        Ok(r) => Some(r.bytes().await),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => return Err(store_error(target, &name, "read", e)),
    };
    let have = have
        .transpose()
        .map_err(|e| store_error(target, &name, "read", e))?;
    if have.as_deref() == Some(want.as_bytes()) {
        return Ok(false);
    }
    if !dry_run {
        let r = target
            .store
            .put(&key, PutPayload::from(want.into_bytes()))
            .await;
        r.map_err(|e| store_error(target, &name, "upload", e))?;
    }
    Ok(true)
}
