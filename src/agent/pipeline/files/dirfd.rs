//! Every path beneath `files_root` is reached from an open handle of `files_root`, one component
//! at a time, with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`: a symlink anywhere is refused
//! at the moment it is met, and once a directory is open, swapping its path for a symlink changes
//! nothing for the agent. Files are written as new temp files (`O_EXCL | O_NOFOLLOW`) whose owner
//! and mode are set on the open file before the rename into place; nothing is ever chmodded,
//! chowned, read or removed by path.

use super::error::{io_at, refused, FilesError};
use rustix::fs::{self as rfs, AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Uid};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_SYMLINKS);

/// Owner and mode of a file or directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Meta {
    fn of(st: &rfs::Stat) -> Self {
        Self {
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
        }
    }
}

/// A regular file as read through a handle.
pub struct Existing {
    pub data: Vec<u8>,
    pub meta: Meta,
}

/// Making missing directories: the owner and mode of each (by path relative to the root), and
/// the list of the ones made.
pub struct Create<'a> {
    pub meta: &'a dyn Fn(&str) -> Meta,
    pub made: &'a mut Vec<String>,
}

/// An open directory at or beneath `files_root`.
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

fn errno(path: &Path) -> impl FnOnce(Errno) -> FilesError + '_ {
    move |e| io_at(path)(e.into())
}

fn kind_word(t: FileType) -> &'static str {
    match t {
        FileType::Symlink => "a symlink",
        FileType::Directory => "a directory",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice | FileType::BlockDevice => "a device",
        _ => "not a regular file",
    }
}

fn open_dir_at(dir: &OwnedFd, name: &str) -> Result<OwnedFd, Errno> {
    rfs::openat2(
        dir,
        name,
        // No O_NOFOLLOW: with it a symlink is "not a directory"; RESOLVE_NO_SYMLINKS refuses it
        // (ELOOP) at this step as at every other.
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        RESOLVE,
    )
}

/// Why a parent of `rel` could not be opened.
fn parent_error(e: Errno, path: &Path, rel: &str) -> FilesError {
    let place = path.display().to_string();
    match e {
        Errno::LOOP => refused(
            place,
            format!("is a symlink on this machine; refusing to install {rel} through it"),
        ),
        Errno::NOTDIR => refused(place, format!("is not a directory; cannot install {rel}")),
        Errno::XDEV => refused(place, format!("leads outside files_root; refusing {rel}")),
        e => io_at(path)(e.into()),
    }
}

impl Dir {
    /// Opens `files_root` itself (a path the admin configured).
    pub fn open_root(path: &Path) -> Result<Self, FilesError> {
        let fd = rfs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno(path))?;
        Ok(Self {
            fd,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn duplicate(&self) -> Result<Self, FilesError> {
        Ok(Self {
            fd: self.fd.try_clone().map_err(io_at(&self.path))?,
            path: self.path.clone(),
        })
    }

    pub fn meta(&self) -> Result<Meta, FilesError> {
        Ok(Meta::of(&rfs::fstat(&self.fd).map_err(errno(&self.path))?))
    }

    /// Refuses this directory when someone other than root and `owner` could write to it (and so
    /// swap what tiffin installs beneath it).
    fn check_writers(&self, owner: u32, rel: &str) -> Result<(), FilesError> {
        let m = self.meta()?;
        let why = if m.uid != 0 && m.uid != owner {
            Some(format!("is owned by uid {}", m.uid))
        } else if m.mode & 0o002 != 0 {
            Some("is writable by everyone".to_string())
        } else if m.mode & 0o020 != 0 && m.gid != 0 {
            Some(format!("is writable by group {}", m.gid))
        } else {
            None
        };
        match why {
            None => Ok(()),
            Some(why) => Err(refused(
                self.path.display().to_string(),
                format!(
                    "{why}, who could swap what is installed beneath it; refusing to install {rel} \
                     (only root and the file's owner may write to its parent directories)"
                ),
            )),
        }
    }

    /// Opens the directory holding `rel` (relative to this root) and returns it with the file's
    /// name. With `owner`, every directory on the way (this one included) must be writable by
    /// nobody but root and `owner`. A missing directory is made with `create`, or ends the walk
    /// with `None`.
    pub fn parent_of<'r>(
        &self,
        rel: &'r str,
        owner: Option<u32>,
        mut create: Option<Create<'_>>,
    ) -> Result<Option<(Dir, &'r str)>, FilesError> {
        let (dirs, name) = match rel.rsplit_once('/') {
            Some((d, n)) => (Some(d), n),
            None => (None, rel),
        };
        let mut cur = self.duplicate()?;
        if let Some(o) = owner {
            cur.check_writers(o, rel)?;
        }
        let mut so_far = String::new();
        for part in dirs.into_iter().flat_map(|d| d.split('/')) {
            if !so_far.is_empty() {
                so_far.push('/');
            }
            so_far.push_str(part);
            let path = cur.path.join(part);
            let fd = match open_dir_at(&cur.fd, part) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => match create.as_mut() {
                    None => return Ok(None),
                    Some(c) => cur.make_dir(part, &so_far, c, rel)?,
                },
                Err(e) => return Err(parent_error(e, &path, rel)),
            };
            cur = Dir { fd, path };
            if let Some(o) = owner {
                cur.check_writers(o, rel)?;
            }
        }
        Ok(Some((cur, name)))
    }

    fn make_dir(
        &self,
        name: &str,
        rel_dir: &str,
        c: &mut Create<'_>,
        rel: &str,
    ) -> Result<OwnedFd, FilesError> {
        let path = self.path.join(name);
        let made = match rfs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => true,
            Err(Errno::EXIST) => false,
            Err(e) => return Err(errno(&path)(e)),
        };
        let fd = open_dir_at(&self.fd, name).map_err(|e| parent_error(e, &path, rel))?;
        if made {
            let m = (c.meta)(rel_dir);
            if (m.uid, m.gid) != (0, 0) {
                rfs::fchown(&fd, Some(Uid::from_raw(m.uid)), Some(Gid::from_raw(m.gid)))
                    .map_err(errno(&path))?;
            }
            rfs::fchmod(&fd, Mode::from_raw_mode(m.mode)).map_err(errno(&path))?;
            c.made.push(rel_dir.to_string());
        }
        Ok(fd)
    }

    /// The directories of `rel`'s path (relative to this root) that do not exist.
    pub fn missing_dirs(&self, rel: &str) -> Result<Vec<String>, FilesError> {
        let Some((dirs, _)) = rel.rsplit_once('/') else {
            return Ok(Vec::new());
        };
        let parts: Vec<&str> = dirs.split('/').collect();
        let mut cur = self.duplicate()?;
        for (n, part) in parts.iter().enumerate() {
            let path = cur.path.join(part);
            match open_dir_at(&cur.fd, part) {
                Ok(fd) => cur = Dir { fd, path },
                Err(Errno::NOENT) => {
                    return Ok((n..parts.len()).map(|k| parts[..=k].join("/")).collect())
                }
                Err(e) => return Err(parent_error(e, &path, rel)),
            }
        }
        Ok(Vec::new())
    }

    /// Owner and mode of every directory of `rel`'s path, by path relative to this root.
    pub fn dir_metas(&self, rel: &str) -> Result<Vec<(String, Meta)>, FilesError> {
        let mut out = Vec::new();
        let Some((dirs, _)) = rel.rsplit_once('/') else {
            return Ok(out);
        };
        let mut cur = self.duplicate()?;
        let mut so_far = String::new();
        for part in dirs.split('/') {
            if !so_far.is_empty() {
                so_far.push('/');
            }
            so_far.push_str(part);
            let path = cur.path.join(part);
            let fd = open_dir_at(&cur.fd, part).map_err(|e| parent_error(e, &path, rel))?;
            cur = Dir { fd, path };
            out.push((so_far.clone(), cur.meta()?));
        }
        Ok(out)
    }

    /// Reads the regular file `name` in this directory; `None` when there is nothing. A symlink,
    /// FIFO, device or directory is refused without being opened for reading (so without
    /// blocking on it).
    pub fn read(&self, name: &str) -> Result<Option<Existing>, FilesError> {
        let path = self.path.join(name);
        let st = match rfs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(errno(&path)(e)),
        };
        let not_regular = |t: FileType| {
            refused(
                path.display().to_string(),
                format!(
                    "exists and is {} on this machine; tiffin only reads and replaces regular files",
                    kind_word(t)
                ),
            )
        };
        let t = FileType::from_raw_mode(st.st_mode);
        if t != FileType::RegularFile {
            return Err(not_regular(t));
        }
        let fd = rfs::openat2(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE,
        )
        .map_err(|e| match e {
            Errno::LOOP => not_regular(FileType::Symlink),
            e => errno(&path)(e),
        })?;
        let st = rfs::fstat(&fd).map_err(errno(&path))?;
        let t = FileType::from_raw_mode(st.st_mode);
        if t != FileType::RegularFile {
            return Err(not_regular(t));
        }
        let mut data = Vec::new();
        File::from(fd)
            .read_to_end(&mut data)
            .map_err(io_at(&path))?;
        Ok(Some(Existing {
            data,
            meta: Meta::of(&st),
        }))
    }

    /// Replaces (or creates) `name` in this directory with `data`, owned and moded as `meta`:
    /// a new temp file (`O_EXCL | O_NOFOLLOW`), owner then mode set on it, content, fsync,
    /// rename into place, fsync of the directory.
    pub fn write(&self, name: &str, data: &[u8], meta: Meta) -> Result<(), FilesError> {
        let path = self.path.join(name);
        let (tmp, fd) = self.create_temp(name)?;
        let filled = (|| -> std::io::Result<()> {
            // Owner before content: a secret never sits under another owner with its data.
            rfs::fchown(
                &fd,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            )?;
            // The mode after the owner: chown clears set-id bits.
            rfs::fchmod(&fd, Mode::from_raw_mode(meta.mode))?;
            let mut f = File::from(fd);
            f.write_all(data)?;
            f.sync_all()?;
            rfs::renameat(&self.fd, &tmp, &self.fd, name)?;
            Ok(())
        })();
        if let Err(e) = filled {
            let _ = rfs::unlinkat(&self.fd, &tmp, AtFlags::empty());
            return Err(io_at(&path)(e));
        }
        rfs::fsync(&self.fd).map_err(errno(&self.path))
    }

    fn create_temp(&self, name: &str) -> Result<(String, OwnedFd), FilesError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut last = Errno::EXIST;
        for _ in 0..16 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let tmp = format!(".{name}.tiffin-{}-{n}-{nanos}.tmp", std::process::id());
            match rfs::openat2(
                &self.fd,
                &tmp,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
                RESOLVE,
            ) {
                Ok(fd) => return Ok((tmp, fd)),
                Err(Errno::EXIST) => last = Errno::EXIST,
                Err(e) => {
                    last = e;
                    break;
                }
            }
        }
        Err(errno(&self.path.join(name))(last))
    }

    /// Removes the file (not directory) `name`; false when it was not there.
    pub fn remove_file(&self, name: &str) -> Result<bool, FilesError> {
        match rfs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) => {
                rfs::fsync(&self.fd).map_err(errno(&self.path))?;
                Ok(true)
            }
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(errno(&self.path.join(name))(e)),
        }
    }

    /// Removes the temp files an agent killed while writing `names` left in this directory.
    pub fn remove_temps_of(&self, names: &[&str]) -> Result<(), FilesError> {
        let entries = rfs::Dir::read_from(&self.fd).map_err(errno(&self.path))?;
        for entry in entries {
            let entry = entry.map_err(errno(&self.path))?;
            let Ok(file) = entry.file_name().to_str() else {
                continue;
            };
            let ours = file.ends_with(".tmp")
                && names
                    .iter()
                    .any(|n| file.starts_with(&format!(".{n}.tiffin-")));
            if ours {
                self.remove_file(file)?;
            }
        }
        Ok(())
    }

    /// Removes the directory `name` when it is empty; true when it is gone.
    pub fn remove_empty_dir(&self, name: &str) -> bool {
        match rfs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => true,
            Err(_) => false,
        }
    }
}
