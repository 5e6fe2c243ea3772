//! The `sftp://` mirror: one SSH session as root on the mirror (host key pinned, the
//! publisher's key), files over SFTP, directories, owners and renames by `remote` commands.

use super::job::{owner_names, HostJob, HostPushed};
use super::plan::{self, Listing};
use super::remote;
use crate::config::mirrors::SshMirror;
use crate::publication::layout::{parse_current_target, CURRENT, GENS};
use crate::source::TRANSFER_LIMITS;
use crate::source::{SftpSource, SftpTarget, CONNECT_TIMEOUT, IO_TIMEOUT};
use ssh2::{FileStat, OpenFlags, OpenType, Session, Sftp};
use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

/// The file beside `current` that names it for HTTP readers (when the primary has one).
const CURRENT_TXT: &str = "current.txt";

pub struct SftpPusher {
    src: SftpSource,
    root: String,
    place: String,
}

impl SftpPusher {
    pub fn connect(m: &SshMirror, identity: &Path, known_hosts: &Path) -> Result<Self, String> {
        let src = SftpSource::connect(SftpTarget {
            user: m.user.clone(),
            host: m.host.clone(),
            port: m.port,
            path: m.root.display().to_string(),
            identity: identity.to_path_buf(),
            known_hosts: known_hosts.to_path_buf(),
            connect_timeout: CONNECT_TIMEOUT,
            io_timeout: IO_TIMEOUT,
            limits: TRANSFER_LIMITS,
        })
        .map_err(|e| e.to_string())?;
        let root = m.root.display().to_string();
        let place = format!("{}@{}:{}", m.user, m.host, m.port);
        Ok(Self { src, root, place })
    }

    fn session(&self) -> &Session {
        self.src.channels().0
    }
    fn sftp(&self) -> &Sftp {
        self.src.channels().1
    }
    fn run(&self, command: &str) -> Result<(), String> {
        remote::run(self.session(), &self.place, command)
    }
    fn err(&self, path: &str, e: impl std::fmt::Display) -> String {
        format!("{}:{path}: {e}", self.place)
    }

    /// Brings the host's publication on the mirror to the primary's: missing generations,
    /// then `current`, then pruning.
    pub fn push_host(&mut self, job: &HostJob) -> Result<HostPushed, String> {
        let hd = format!("{}/{}", self.root, job.host);
        self.run(&remote::skeleton(
            &hd,
            &self.root,
            job.logs_owner.as_deref(),
        ))?;
        let mut have = self.remote_generations(&hd)?;
        let mut pushed = HostPushed {
            generation: job.live,
            ..Default::default()
        };
        for (g, base) in super::plan::missing(&job.generations, &have) {
            self.push_generation(job, &hd, g, base, &mut pushed)?;
            have.insert(g);
        }
        self.refresh_manifest(job, &hd, &mut pushed)?;
        self.switch_current(job, &hd, &mut pushed)?;
        let gone: Vec<u64> = have
            .iter()
            .filter(|g| !job.generations.contains(g))
            .copied()
            .collect();
        if !gone.is_empty() {
            self.run(&remote::prune(&format!("{hd}/{GENS}"), &gone))?;
            pushed.changed = true;
        }
        Ok(pushed)
    }

    /// The complete generations on the mirror (`gens/<N>`; `.incoming-*` is not one).
    fn remote_generations(&self, hd: &str) -> Result<BTreeSet<u64>, String> {
        let gens = format!("{hd}/{GENS}");
        let list = self
            .sftp()
            .readdir(Path::new(&gens))
            .map_err(|e| self.err(&gens, e))?;
        Ok(list
            .iter()
            .filter(|(_, st)| st.is_dir())
            .filter_map(|(p, _)| p.file_name()?.to_str()?.parse::<u64>().ok())
            .collect())
    }

    fn push_generation(
        &self,
        job: &HostJob,
        hd: &str,
        g: u64,
        base: Option<u64>,
        pushed: &mut HostPushed,
    ) -> Result<(), String> {
        let local = job.publication.generation_dir(g);
        let new = plan::list(&local).map_err(|e| e.to_string())?;
        let base_list = match base {
            Some(b) => plan::list(&job.publication.generation_dir(b)).map_err(|e| e.to_string())?,
            None => Listing::new(),
        };
        let mode = dir_mode(&local)?;
        let inc = format!("{hd}/{GENS}/.incoming-{g}");
        let base_dir = base.map(|b| format!("{hd}/{GENS}/{b}"));
        self.run(&remote::start_generation(&inc, base_dir.as_deref(), mode))?;
        let p = plan::plan(&new, &base_list);
        for f in &p.remove_files {
            self.unlink(&format!("{inc}/{f}"))?;
        }
        for d in &p.remove_dirs {
            let path = format!("{inc}/{d}");
            self.sftp()
                .rmdir(Path::new(&path))
                .map_err(|e| self.err(&path, e))?;
        }
        for d in &p.mkdirs {
            let path = format!("{inc}/{d}");
            self.sftp()
                .mkdir(Path::new(&path), new[d].mode as i32)
                .map_err(|e| self.err(&path, e))?;
        }
        for f in &p.send {
            let remote = format!("{inc}/{f}");
            if base_list.get(f).is_some_and(|b| !b.dir) {
                // A hard link to the base's file: never write through it.
                self.unlink(&remote)?;
            }
            pushed.bytes += self.upload(&local.join(f), &remote, &new[f])?;
            pushed.files += 1;
        }
        let owner = owner_names(&local)?;
        self.run(&remote::finish_generation(
            &inc,
            &format!("{hd}/{GENS}/{g}"),
            &owner,
            mode,
        ))?;
        pushed.changed = true;
        Ok(())
    }

    fn unlink(&self, path: &str) -> Result<(), String> {
        self.sftp()
            .unlink(Path::new(path))
            .map_err(|e| self.err(path, e))
    }

    /// Sends one file with its mode and mtime (the mtime lets a later run see a re-signed
    /// manifest).
    fn upload(&self, local: &Path, remote: &str, meta: &plan::Local) -> Result<u64, String> {
        let mut input = fs::File::open(local).map_err(|e| format!("{}: {e}", local.display()))?;
        let mut out = self
            .sftp()
            .open_mode(
                Path::new(remote),
                OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
                meta.mode as i32,
                OpenType::File,
            )
            .map_err(|e| self.err(remote, e))?;
        let n = copy(&mut input, &mut out).map_err(|e| self.err(remote, e))?;
        drop(out);
        let stat = FileStat {
            size: None,
            uid: None,
            gid: None,
            perm: Some(meta.mode),
            atime: Some(meta.mtime.max(0) as u64),
            mtime: Some(meta.mtime.max(0) as u64),
        };
        self.sftp()
            .setstat(Path::new(remote), stat)
            .map_err(|e| self.err(remote, e))?;
        Ok(n)
    }

    /// The live generation's manifest, when `publish` signed it again since it was pushed.
    fn refresh_manifest(
        &self,
        job: &HostJob,
        hd: &str,
        pushed: &mut HostPushed,
    ) -> Result<(), String> {
        let local = job
            .publication
            .generation_dir(job.live)
            .join("manifest.json");
        let meta = plan::list_one(&local).map_err(|e| e.to_string())?;
        let remote = format!("{hd}/{GENS}/{}/manifest.json", job.live);
        let st = self
            .sftp()
            .stat(Path::new(&remote))
            .map_err(|e| self.err(&remote, e))?;
        if st.size == Some(meta.size) && st.mtime == Some(meta.mtime.max(0) as u64) {
            return Ok(());
        }
        let tmp = format!("{hd}/{GENS}/{}/.manifest.json.mirror", job.live);
        pushed.bytes += self.upload(&local, &tmp, &meta)?;
        pushed.files += 1;
        self.run(&remote::replace_file(&tmp, &remote))?;
        pushed.changed = true;
        Ok(())
    }

    /// `current` (and `current.txt`, when the primary has one) last, each in one rename.
    fn switch_current(
        &self,
        job: &HostJob,
        hd: &str,
        pushed: &mut HostPushed,
    ) -> Result<(), String> {
        let link = format!("{hd}/{CURRENT}");
        let now = self
            .sftp()
            .readlink(Path::new(&link))
            .ok()
            .and_then(|t| parse_current_target(t.to_str()?));
        let local_txt = job.publication.dir.join(CURRENT_TXT);
        let txt = match fs::read(&local_txt) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("{}: {e}", local_txt.display())),
        };
        let txt_stale = match &txt {
            Some(bytes) => self.read_small(&format!("{hd}/{CURRENT_TXT}")).as_ref() != Some(bytes),
            None => false,
        };
        if now == Some(job.live) && !txt_stale {
            return Ok(());
        }
        let txt_owner = match (&txt, txt_stale) {
            (Some(bytes), true) => {
                let tmp = format!("{hd}/.current.txt.mirror");
                let meta = plan::list_one(&local_txt).map_err(|e| e.to_string())?;
                self.write_small(&tmp, bytes, meta.mode)?;
                Some(owner_names(&local_txt)?)
            }
            _ => None,
        };
        self.run(&remote::switch_current(hd, job.live, txt_owner.as_deref()))?;
        pushed.changed = true;
        Ok(())
    }

    fn read_small(&self, path: &str) -> Option<Vec<u8>> {
        let f = self.sftp().open(Path::new(path)).ok()?;
        let mut buf = Vec::new();
        f.take(4096).read_to_end(&mut buf).ok()?;
        Some(buf)
    }

    fn write_small(&self, path: &str, data: &[u8], mode: u32) -> Result<(), String> {
        let mut f = self
            .sftp()
            .open_mode(
                Path::new(path),
                OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
                mode as i32,
                OpenType::File,
            )
            .map_err(|e| self.err(path, e))?;
        f.write_all(data).map_err(|e| self.err(path, e))
    }
}

fn copy(input: &mut fs::File, out: &mut impl Write) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        let k = input.read(&mut buf)?;
        if k == 0 {
            return Ok(n);
        }
        out.write_all(&buf[..k])?;
        n += k as u64;
    }
}

fn dir_mode(p: &Path) -> Result<u32, String> {
    Ok(plan::list_one(p).map_err(|e| e.to_string())?.mode)
}
