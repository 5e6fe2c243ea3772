//! `sftp://user@host:port/path`: the host's chroot on the central server, over ssh2.
//!
//! One [`SftpSource`] is one SSH session (one per agent cycle). The server's host key is checked
//! against the agent's known_hosts file right after the key exchange, before the agent
//! authenticates or reads anything: an unknown or changed key is refused, never learned.

use super::file::copy_bounded;
use super::watchdog::{Meter, TransferLimits, Watchdog};
use super::{check_log_name, parse_current_target, Source, SourceError};
use crate::hash;
use crate::publication::layout::{self, CURRENT};
use base64::Engine;
use ssh2::{
    CheckResult, ErrorCode, KnownHostFileKind, MethodType, OpenFlags, OpenType, Session, Sftp,
};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// How long to wait for the TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long any single blocking SSH/SFTP operation may wait for the server.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

// SFTP status codes (draft-ietf-secsh-filexfer-02, the version OpenSSH speaks).
const FX_NO_SUCH_FILE: i32 = 2;
const FX_PERMISSION_DENIED: i32 = 3;
const FX_NO_SUCH_PATH: i32 = 10;
// libssh2 error codes met during authentication.
const LIBSSH2_ERROR_FILE: i32 = -16;
const LIBSSH2_ERROR_AUTHENTICATION_FAILED: i32 = -18;
const LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED: i32 = -19;

/// Algorithms in order of preference. Only those this libssh2 supports are offered; short lists
/// also keep the key exchange small on the wire (the no-change check is a few KB in total).
const PREFERRED: &[(MethodType, &[&str])] = &[
    (
        MethodType::Kex,
        &[
            "curve25519-sha256",
            "curve25519-sha256@libssh.org",
            "ecdh-sha2-nistp256",
        ],
    ),
    (
        MethodType::HostKey,
        &["ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512"],
    ),
    (
        MethodType::CryptCs,
        &[
            "chacha20-poly1305@openssh.com",
            "aes256-gcm@openssh.com",
            "aes256-ctr",
        ],
    ),
    (
        MethodType::CryptSc,
        &[
            "chacha20-poly1305@openssh.com",
            "aes256-gcm@openssh.com",
            "aes256-ctr",
        ],
    ),
    // Only used with the -ctr fallbacks; the AEAD ciphers carry their own MAC.
    (
        MethodType::MacCs,
        &["hmac-sha2-256-etm@openssh.com", "hmac-sha2-256"],
    ),
    (
        MethodType::MacSc,
        &["hmac-sha2-256-etm@openssh.com", "hmac-sha2-256"],
    ),
    // Compression only after authentication (OpenSSH's delayed zlib), or none.
    (MethodType::CompCs, &["zlib@openssh.com", "none"]),
    (MethodType::CompSc, &["zlib@openssh.com", "none"]),
];

/// Where to connect and with which keys.
#[derive(Clone, Debug)]
pub struct SftpTarget {
    pub user: String,
    pub host: String,
    pub port: u16,
    /// The host's directory as seen in its chroot (usually `/`).
    pub path: String,
    pub identity: PathBuf,
    pub known_hosts: PathBuf,
    /// Limit for the TCP connection ([`CONNECT_TIMEOUT`] from `source::open`).
    pub connect_timeout: Duration,
    /// Limit for every blocking SSH/SFTP operation ([`IO_TIMEOUT`] from `source::open`).
    pub io_timeout: Duration,
    /// The session's deadline and minimum rate ([`super::TRANSFER_LIMITS`] from `source::open`).
    pub limits: TransferLimits,
}

/// An authenticated SFTP session on the host's publication.
pub struct SftpSource {
    target: SftpTarget,
    // Field order matters: the SFTP channel closes before the session.
    sftp: Sftp,
    session: Session,
    watchdog: Watchdog,
}

impl SftpSource {
    /// Connects, checks the host key, authenticates and opens the SFTP channel.
    pub fn connect(mut target: SftpTarget) -> Result<Self, SourceError> {
        let place = describe(&target);
        // A canonical base path: the symlink check compares the server's REALPATH with it.
        let mut parts = Vec::new();
        for part in target.path.split('/').filter(|p| !p.is_empty()) {
            if part == "." || part == ".." {
                return Err(SourceError::BadUrl {
                    url: place,
                    why: format!("the path may not contain {part:?}"),
                });
            }
            parts.push(part);
        }
        target.path = format!("/{}", parts.join("/"));
        let unreachable = |why: String| SourceError::Unreachable {
            place: place.clone(),
            why,
        };
        let addrs: Vec<_> = (target.host.as_str(), target.port)
            .to_socket_addrs()
            .map_err(|e| unreachable(format!("cannot resolve {}: {e}", target.host)))?
            .collect();
        let mut last = None;
        let mut tcp = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, target.connect_timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(format!("{a}: {e}")),
            }
        }
        let tcp = tcp.ok_or_else(|| {
            unreachable(last.unwrap_or_else(|| format!("{} has no address", target.host)))
        })?;
        let watchdog = match tcp.try_clone() {
            Ok(t) => Watchdog::start(t, target.limits),
            Err(e) => return Err(unreachable(format!("cannot watch the connection: {e}"))),
        };
        let opened = {
            let _busy = watchdog.busy();
            open_session(&target, &place, tcp)
        };
        let (session, sftp) = opened.map_err(|e| cut_or(e, &watchdog, &place))?;
        Ok(Self {
            target,
            sftp,
            session,
            watchdog,
        })
    }

    /// The algorithms negotiated for this session, for logs and the benchmark.
    pub fn negotiated(&self) -> String {
        let m = |t| self.session.methods(t).unwrap_or("?").to_string();
        format!(
            "kex {}, host key {}, cipher {}, compression {}",
            m(MethodType::Kex),
            m(MethodType::HostKey),
            m(MethodType::CryptCs),
            m(MethodType::CompCs)
        )
    }

    /// The session and its SFTP channel, for `fleet publish`'s mirror push (root on a mirror:
    /// it also runs commands there).
    pub(crate) fn channels(&self) -> (&Session, &Sftp) {
        (&self.session, &self.sftp)
    }

    /// The remote path of `rel` inside the host's directory.
    fn remote(&self, rel: &str) -> PathBuf {
        let base = self.target.path.trim_end_matches('/');
        PathBuf::from(format!("{base}/{rel}"))
    }

    fn place(&self, rel: &str) -> String {
        format!("{}{rel}", self.describe())
    }

    fn reader<R: Read>(&self, r: R) -> RemoteReader<R> {
        RemoteReader(r, self.watchdog.meter())
    }

    /// Runs one request as the watchdog's "in flight"; once the watchdog has cut the session,
    /// every request fails at once with its reason.
    fn watched<T>(
        &mut self,
        request: impl FnOnce(&mut Self) -> Result<T, SourceError>,
    ) -> Result<T, SourceError> {
        let place = self.describe();
        if let Some(why) = self.watchdog.cut() {
            return Err(SourceError::Unreachable { place, why });
        }
        let busy = self.watchdog.busy();
        let r = request(self);
        drop(busy);
        r.map_err(|e| cut_or(e, &self.watchdog, &place))
    }
}

/// Handshake, host key check, authentication and the SFTP channel, on a connected socket.
fn open_session(
    target: &SftpTarget,
    place: &str,
    tcp: TcpStream,
) -> Result<(Session, Sftp), SourceError> {
    let unreachable = |why: String| SourceError::Unreachable {
        place: place.to_string(),
        why,
    };
    // The no-change check is a handful of small packets: do not let Nagle delay them.
    let _ = tcp.set_nodelay(true);

    let mut session = Session::new().map_err(|e| unreachable(e.to_string()))?;
    session.set_timeout(target.io_timeout.as_millis().clamp(1, u32::MAX as u128) as u32);
    // The manifest is JSON and most trees are text: zlib shrinks a one-file update to a
    // small fraction of the tree (the manifest alone is ~190 bytes per entry uncompressed).
    session.set_compress(true);
    for (method, wanted) in PREFERRED {
        let supported = session.supported_algs(*method).unwrap_or_default();
        let offer: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|w| supported.contains(w))
            .collect();
        // Nothing we like is supported: keep libssh2's defaults rather than fail here.
        if !offer.is_empty() {
            let _ = session.method_pref(*method, &offer.join(","));
        }
    }
    session.set_tcp_stream(tcp);
    session
        .handshake()
        .map_err(|e| unreachable(format!("SSH handshake failed: {}", e.message())))?;

    check_host_key(&session, target, place)?;

    session
        .userauth_pubkey_file(&target.user, None, &target.identity, None)
        .map_err(|e| {
            let key = target.identity.display();
            let why = match e.code() {
                ErrorCode::Session(LIBSSH2_ERROR_FILE) => {
                    format!("cannot use the identity file {key}: {}", e.message())
                }
                ErrorCode::Session(
                    LIBSSH2_ERROR_AUTHENTICATION_FAILED | LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED,
                ) => format!(
                    "the server refused the key {key} for user {:?} ({})",
                    target.user,
                    e.message()
                ),
                _ => return map_err(e, place),
            };
            SourceError::Auth {
                place: place.to_string(),
                why,
            }
        })?;
    if !session.authenticated() {
        return Err(SourceError::Auth {
            place: place.to_string(),
            why: format!("user {:?} is not authenticated", target.user),
        });
    }
    let sftp = session.sftp().map_err(|e| map_err(e, place))?;
    Ok((session, sftp))
}

fn describe(t: &SftpTarget) -> String {
    let host = if t.host.contains(':') {
        format!("[{}]", t.host)
    } else {
        t.host.clone()
    };
    let path = if t.path.ends_with('/') {
        t.path.clone()
    } else {
        format!("{}/", t.path)
    };
    format!("sftp://{}@{host}:{}{path}", t.user, t.port)
}

/// An OpenSSH-style fingerprint: `SHA256:` and the unpadded base64 of the key blob's digest.
pub fn fingerprint(key_blob: &[u8]) -> String {
    let digest = hex::decode(hash::sha256_bytes(key_blob)).unwrap_or_default();
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

/// The name a known_hosts entry has for this server: `host`, or `[host]:port` off port 22.
fn known_hosts_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

fn check_host_key(session: &Session, t: &SftpTarget, place: &str) -> Result<(), SourceError> {
    let (key, _) = session.host_key().ok_or_else(|| SourceError::Unreachable {
        place: place.to_string(),
        why: "the server presented no host key".into(),
    })?;
    let found = fingerprint(key);
    let mut kh = session.known_hosts().map_err(|e| map_err(e, place))?;
    let file = t.known_hosts.display().to_string();
    if let Err(e) = std::fs::metadata(&t.known_hosts) {
        return Err(SourceError::HostKey {
            place: place.to_string(),
            found,
            expected: format!("none: cannot read {file}: {e}"),
        });
    }
    kh.read_file(&t.known_hosts, KnownHostFileKind::OpenSSH)
        .map_err(|e| SourceError::HostKey {
            place: place.to_string(),
            found: found.clone(),
            expected: format!("none: {file} is not a known_hosts file ({})", e.message()),
        })?;
    match kh.check_port(&t.host, t.port, key) {
        CheckResult::Match => Ok(()),
        CheckResult::Mismatch => {
            // Name the pinned key(s) for this server, so the admin can compare both.
            let name = known_hosts_name(&t.host, t.port);
            let pinned: Vec<String> = kh
                .hosts()
                .unwrap_or_default()
                .iter()
                .filter(|h| {
                    h.name()
                        .is_some_and(|n| n.split(',').any(|p| p == name || p == t.host))
                })
                .filter_map(|h| {
                    base64::engine::general_purpose::STANDARD
                        .decode(h.key())
                        .ok()
                })
                .map(|blob| fingerprint(&blob))
                .collect();
            let expected = if pinned.is_empty() {
                format!("a different key for {name} in {file}")
            } else {
                format!("{} for {name} in {file}", pinned.join(", "))
            };
            Err(SourceError::HostKey {
                place: place.to_string(),
                found,
                expected,
            })
        }
        CheckResult::NotFound => Err(SourceError::HostKey {
            place: place.to_string(),
            found,
            expected: format!(
                "none: {file} has no entry for {}",
                known_hosts_name(&t.host, t.port)
            ),
        }),
        CheckResult::Failure => Err(SourceError::HostKey {
            place: place.to_string(),
            found,
            expected: format!("unknown: checking {file} failed"),
        }),
    }
}

/// Sorts a libssh2 error into what the agent acts on.
fn map_err(e: ssh2::Error, place: &str) -> SourceError {
    let place = place.to_string();
    match e.code() {
        ErrorCode::SFTP(FX_NO_SUCH_FILE | FX_NO_SUCH_PATH) => SourceError::NotFound { place },
        ErrorCode::SFTP(FX_PERMISSION_DENIED) => SourceError::Permission { place },
        ErrorCode::SFTP(code) => SourceError::Io {
            place,
            source: io::Error::other(format!("SFTP error {code}: {}", e.message())),
        },
        // Every session-level error (socket, timeout, channel, protocol) means the session is
        // gone: treat it as a broken connection, which the next cycle retries.
        ErrorCode::Session(code) => SourceError::Unreachable {
            place,
            why: format!("connection lost ({}, libssh2 code {code})", e.message()),
        },
    }
}

/// Marks every read error of an open SFTP file, so that it is told apart from an error writing
/// the local copy (a full disk is not a broken connection).
/// Each byte read counts for the watchdog's minimum rate.
struct RemoteReader<R>(R, Meter);

impl<R: Read> Read for RemoteReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self
            .0
            .read(buf)
            .map_err(|e| io::Error::new(io::ErrorKind::ConnectionAborted, e))?;
        self.1.progress(n as u64);
        Ok(n)
    }
}

/// A failure of a session the watchdog cut is reported with the watchdog's reason, at the
/// place the request failed (`session` when it names none).
fn cut_or(e: SourceError, watchdog: &Watchdog, session: &str) -> SourceError {
    let Some(why) = watchdog.cut() else {
        return e;
    };
    let place = match e {
        SourceError::Unreachable { place, .. }
        | SourceError::HostKey { place, .. }
        | SourceError::Auth { place, .. }
        | SourceError::Permission { place }
        | SourceError::NotFound { place }
        | SourceError::Layout { place, .. }
        | SourceError::TooLarge { place, .. }
        | SourceError::Io { place, .. } => place,
        SourceError::BadUrl { .. } => session.to_string(),
    };
    SourceError::Unreachable { place, why }
}

/// ssh2 turns SFTP read errors into io::Error and loses the code: a read that fails mid-file
/// means the session broke.
fn map_read_err(e: SourceError) -> SourceError {
    match e {
        SourceError::Io { place, source } if source.kind() == io::ErrorKind::ConnectionAborted => {
            SourceError::Unreachable {
                place,
                why: format!("connection lost while reading: {source}"),
            }
        }
        other => other,
    }
}

/// The requests themselves; [`Source`] runs each under the watchdog.
impl SftpSource {
    fn current_generation_unwatched(&mut self) -> Result<Option<u64>, SourceError> {
        let place = self.place(CURRENT);
        match self.sftp.readlink(&self.remote(CURRENT)) {
            Ok(t) => parse_current_target(&t.to_string_lossy(), &place).map(Some),
            Err(e) => match map_err(e, &place) {
                // No `current`: nothing is published yet, as long as the host's directory is
                // there (a second request, only in this rare case).
                SourceError::NotFound { .. } => {
                    let base = self.remote("");
                    self.sftp
                        .stat(&base)
                        .map_err(|e| map_err(e, &self.place("")))?;
                    Ok(None)
                }
                other => Err(other),
            },
        }
    }

    fn read_manifest_unwatched(
        &mut self,
        generation: u64,
        limit: u64,
    ) -> Result<Vec<u8>, SourceError> {
        let rel = layout::manifest_rel(generation);
        let place = self.place(&rel);
        let f = self
            .sftp
            .open(self.remote(&rel))
            .map_err(|e| map_err(e, &place))?;
        let mut v = Vec::new();
        copy_bounded(&mut self.reader(f), &mut v, limit, &place).map_err(map_read_err)?;
        Ok(v)
    }

    fn read_file_unwatched(
        &mut self,
        generation: u64,
        path: &str,
        out: &mut dyn Write,
        limit: u64,
    ) -> Result<u64, SourceError> {
        self.read_rel_unwatched(&layout::tree_rel(generation, path), out, limit)
    }

    /// A cache file: REALPATH first (no symlink on the way), then the read.
    fn read_cache_unwatched(
        &mut self,
        generation: u64,
        name: &str,
        out: &mut dyn Write,
        limit: u64,
    ) -> Result<u64, SourceError> {
        let rel = layout::cache_rel(generation, name);
        self.check_rel_unwatched(&rel)?;
        self.read_rel_unwatched(&rel, out, limit)
    }

    fn read_rel_unwatched(
        &mut self,
        rel: &str,
        out: &mut dyn Write,
        limit: u64,
    ) -> Result<u64, SourceError> {
        let place = self.place(rel);
        let remote = self.remote(rel);
        let f = self.sftp.open(&remote).map_err(|e| map_err(e, &place))?;
        copy_bounded(&mut self.reader(f), out, limit, &place).map_err(map_read_err)
    }

    /// One REALPATH round trip: the server resolves every symlink on the way.
    fn check_tree_path_unwatched(
        &mut self,
        generation: u64,
        path: &str,
    ) -> Result<(), SourceError> {
        self.check_rel_unwatched(&layout::tree_rel(generation, path))
    }

    /// `rel` is reached without a symlink: the server's REALPATH is the path itself.
    fn check_rel_unwatched(&mut self, rel: &str) -> Result<(), SourceError> {
        let place = self.place(rel);
        let remote = self.remote(rel);
        let real = self
            .sftp
            .realpath(&remote)
            .map_err(|e| map_err(e, &place))?;
        if real != remote {
            return Err(SourceError::Layout {
                place,
                why: format!(
                    "resolves to {} through a symlink; a publication has none",
                    real.display()
                ),
            });
        }
        Ok(())
    }

    fn upload_log_unwatched(&mut self, name: &str, data: &[u8]) -> Result<(), SourceError> {
        check_log_name(name)?;
        let rel = layout::log_rel(name);
        let place = self.place(&rel);
        let tmp = self.remote(&layout::log_tmp_rel(name));
        let dest = self.remote(&rel);
        let mut f = self
            .sftp
            .open_mode(
                &tmp,
                OpenFlags::WRITE | OpenFlags::TRUNCATE,
                0o600,
                OpenType::File,
            )
            .map_err(|e| map_err(e, &place))?;
        let meter = self.watchdog.meter();
        let written = data.chunks(8 * 1024).try_for_each(|chunk| {
            f.write_all(chunk)?;
            meter.progress(chunk.len() as u64);
            Ok::<(), io::Error>(())
        });
        if let Err(e) = written {
            drop(f);
            // ssh2 loses the SFTP status of a failed write: ask the server whether it still
            // answers. If it does, it refused the data (OpenSSH answers a full disk with a plain
            // "failure"), which is not a lost connection; the partial upload is removed so that
            // it does not hold the space.
            if self.sftp.unlink(&tmp).is_ok() {
                return Err(SourceError::Io {
                    place,
                    source: io::Error::other(format!(
                        "the server refused the data ({e}); its disk may be full"
                    )),
                });
            }
            return Err(SourceError::Unreachable {
                place,
                why: format!("connection lost while writing: {e}"),
            });
        }
        f.close().map_err(|e| map_err(e, &place))?;
        // SFTP v3 (OpenSSH) refuses to rename over an existing file and ignores the OVERWRITE
        // flag: remove the old one first. A reader then sees the old file, none, or the new
        // one — never half of one.
        if self.sftp.rename(&tmp, &dest, None).is_err() {
            match self.sftp.unlink(&dest) {
                Ok(()) => {}
                Err(e) => match map_err(e, &place) {
                    SourceError::NotFound { .. } => {}
                    other => return Err(other),
                },
            }
            self.sftp
                .rename(&tmp, &dest, None)
                .map_err(|e| map_err(e, &place))?;
        }
        Ok(())
    }
}

impl Source for SftpSource {
    fn describe(&self) -> String {
        describe(&self.target)
    }

    fn current_generation(&mut self) -> Result<Option<u64>, SourceError> {
        self.watched(|s| s.current_generation_unwatched())
    }

    fn read_manifest(&mut self, generation: u64, limit: u64) -> Result<Vec<u8>, SourceError> {
        self.watched(|s| s.read_manifest_unwatched(generation, limit))
    }

    fn read_file(
        &mut self,
        generation: u64,
        path: &str,
        out: &mut dyn Write,
        limit: u64,
    ) -> Result<u64, SourceError> {
        self.watched(|s| s.read_file_unwatched(generation, path, out, limit))
    }

    fn read_cache_file(
        &mut self,
        generation: u64,
        name: &str,
        out: &mut dyn Write,
        limit: u64,
    ) -> Result<u64, SourceError> {
        self.watched(|s| s.read_cache_unwatched(generation, name, out, limit))
    }

    fn check_tree_path(&mut self, generation: u64, path: &str) -> Result<(), SourceError> {
        self.watched(|s| s.check_tree_path_unwatched(generation, path))
    }

    fn upload_log(&mut self, name: &str, data: &[u8]) -> Result<(), SourceError> {
        self.watched(|s| s.upload_log_unwatched(name, data))
    }
}
