//! A real nginx (Debian's nginx-light) serving a directory on 127.0.0.1:<free port>, over HTTP or
//! HTTPS, started by the test as root with its own config in a temp dir (`nginx -c … -g 'daemon
//! off;'`), its workers running as the user and group the test names, and an access log a test
//! reads to count requests, statuses, bytes and connections.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

pub const NGINX: &str = "/usr/sbin/nginx";

/// Why nginx cannot run here, if it cannot (for [`super::prerequisite`]).
pub fn missing() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not running as root (nginx's workers switch to the test's user)".into());
    }
    (!Path::new(NGINX).exists()).then(|| format!("{NGINX} is missing (install nginx-light)"))
}

/// What nginx serves and how.
pub struct NginxOptions<'a> {
    /// The directory served at `/`.
    pub root: &'a Path,
    /// The workers' user and group (`user USER GROUP;`).
    pub user: &'a str,
    pub group: &'a str,
    /// HTTPS with this certificate chain and key (PEM files).
    pub tls: Option<(&'a Path, &'a Path)>,
}

/// One line of the access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    pub method: String,
    /// The request URI as sent (percent-encoded).
    pub uri: String,
    pub status: u16,
    /// Bytes of the body sent, and of the whole response (headers included).
    pub body_bytes: u64,
    pub bytes: u64,
    /// nginx's connection serial number: equal for requests on one kept-alive connection.
    pub connection: u64,
}

pub struct Nginx {
    dir: tempfile::TempDir,
    port: u16,
    tls: bool,
    child: Mutex<Option<Child>>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Nginx {
    /// Starts nginx; panics with its error log when it does not come up. Call
    /// [`super::prerequisite`] with [`missing`] first.
    pub fn start(opts: &NginxOptions) -> Nginx {
        let dir = tempfile::Builder::new()
            .prefix("tiffin-nginx-")
            .tempdir()
            .expect("temp dir");
        let n = Nginx {
            port: free_port(),
            tls: opts.tls.is_some(),
            child: Mutex::new(None),
            dir,
        };
        fs::write(n.dir.path().join("nginx.conf"), n.config(opts)).unwrap();
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(n.dir.path())
            .arg("-e")
            .arg(n.dir.path().join("error.log"))
            .arg("-c")
            .arg(n.dir.path().join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {NGINX}: {e}"));
        *n.child.lock().unwrap() = Some(child);
        n.wait_listening();
        n
    }

    fn config(&self, o: &NginxOptions) -> String {
        let d = self.dir.path().display();
        let (ssl, tls) = match o.tls {
            Some((cert, key)) => (
                " ssl",
                format!(
                    "ssl_certificate {};\n    ssl_certificate_key {};\n",
                    cert.display(),
                    key.display()
                ),
            ),
            None => ("", String::new()),
        };
        format!(
            r#"user {user} {group};
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
  log_format tiffin '$request_method $request_uri $status $body_bytes_sent $bytes_sent $connection';
  access_log {d}/access.log tiffin;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  types {{ text/plain txt; application/json json; }}
  default_type application/octet-stream;
  keepalive_timeout 75s;
  server {{
    listen 127.0.0.1:{port}{ssl};
    {tls}root {root};
    autoindex off;
  }}
}}
"#,
            user = o.user,
            group = o.group,
            port = self.port,
            root = o.root.display(),
        )
    }

    fn wait_listening(&self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            let exited = self
                .child
                .lock()
                .unwrap()
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            assert!(!exited, "nginx exited:\n{}", self.error_log());
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("nginx did not listen within 10 s:\n{}", self.error_log());
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http(s)://127.0.0.1:<port>/<path>`.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/{path}", self.port)
    }

    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// Every request so far, in order.
    pub fn access_log(&self) -> Vec<Access> {
        let text = fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
        text.lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                assert_eq!(f.len(), 6, "access log line {l:?}");
                Access {
                    method: f[0].into(),
                    uri: f[1].into(),
                    status: f[2].parse().unwrap(),
                    body_bytes: f[3].parse().unwrap(),
                    bytes: f[4].parse().unwrap(),
                    connection: f[5].parse().unwrap(),
                }
            })
            .collect()
    }

    /// The directory of nginx's config and logs.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// The master's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().unwrap().as_ref().map(|c| c.id())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let Some(mut child) = self.child.lock().ok().and_then(|mut c| c.take()) else {
            return;
        };
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        // SIGTERM: the master stops its workers and exits.
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A directory (and its parents up to an existing one) made traversable by nginx's workers.
pub fn open_to_workers(dir: &Path) {
    let mut p = dir.to_path_buf();
    while p.parent().is_some() && p != Path::new("/") {
        let mode = fs::metadata(&p).unwrap().permissions().mode();
        if mode & 0o001 == 0 {
            fs::set_permissions(&p, fs::Permissions::from_mode(mode | 0o711)).unwrap();
        }
        p.pop();
    }
}

/// `openssl` makes a CA and a certificate for 127.0.0.1 signed by it, in `dir`: returns
/// (ca.pem, cert.pem, key.pem).
pub fn make_tls(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = dir.join(format!("{name}-ca.key"));
    let ca = dir.join(format!("{name}-ca.pem"));
    let key = dir.join(format!("{name}-server.key"));
    let csr = dir.join(format!("{name}-server.csr"));
    let cert = dir.join(format!("{name}-server.pem"));
    let ext = dir.join(format!("{name}-ext.cnf"));
    fs::write(
        &ext,
        "subjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\nextendedKeyUsage = serverAuth\n",
    )
    .unwrap();
    let p = |p: &Path| p.display().to_string();
    let run = |args: &[&str]| {
        let o = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs (package openssl)");
        assert!(o.status.success(), "openssl {args:?}: {o:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p(&ca_key),
        "-out",
        &p(&ca),
        "-days",
        "2",
        "-subj",
        &format!("/CN=tiffin test CA {name}"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p(&key),
        "-out",
        &p(&csr),
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        &p(&csr),
        "-CA",
        &p(&ca),
        "-CAkey",
        &p(&ca_key),
        "-CAcreateserial",
        "-out",
        &p(&cert),
        "-days",
        "2",
        "-extfile",
        &p(&ext),
    ]);
    (ca, cert, key)
}
