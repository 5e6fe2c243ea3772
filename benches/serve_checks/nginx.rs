//! nginx for the serving benchmark: Debian's `nginx-light` started by the bench as its own
//! child (`nginx -c <conf> -g 'daemon off;'`), on loopback ports of its own, serving a
//! directory of publications as a web server in front of a fleet would. One listener per way an
//! agent can meet it ([`Listener`]): plain HTTP and HTTPS with keep-alive off
//! (`keepalive_timeout 0`: a fresh connection per check, as at a 10-minute interval) and on.
//! HTTPS (no session tickets: every fresh connection is a full handshake) uses a certificate (ECDSA P-256)
//! signed by a CA made for the run with `openssl`. Workers run as root: the publication's files
//! are readable by each host's group only, and the bench serves several hosts.
//!
//! CPU: the master and its workers are long-lived (a connection forks nothing), so their CPU
//! time is read while they run: the sum of `sum_exec_runtime` (nanoseconds on a CPU, user and
//! system together) from `/proc/<pid>/schedstat` over the master and every worker.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};
use tiffin::runner::Runner;

pub const NGINX: &str = "/usr/sbin/nginx";

/// The ways in, in the order of [`Nginx::ports`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    Http,
    HttpKeepAlive,
    /// A fresh connection and a full TLS handshake per check (no session tickets, as when the
    /// last ticket outlived nginx's default `ssl_session_timeout` of 5 minutes).
    Https,
    HttpsKeepAlive,
}

impl Listener {
    pub const ALL: [Listener; 4] = [
        Listener::Http,
        Listener::HttpKeepAlive,
        Listener::Https,
        Listener::HttpsKeepAlive,
    ];

    pub fn tls(self) -> bool {
        !matches!(self, Listener::Http | Listener::HttpKeepAlive)
    }

    pub fn scheme(self) -> &'static str {
        if self.tls() {
            "https"
        } else {
            "http"
        }
    }

    pub fn keep_alive(self) -> bool {
        matches!(self, Listener::HttpKeepAlive | Listener::HttpsKeepAlive)
    }

    fn index(self) -> usize {
        Listener::ALL.iter().position(|l| *l == self).unwrap_or(0)
    }
}

pub struct Nginx {
    dir: tempfile::TempDir,
    ports: [u16; 4],
    child: Option<Child>,
    /// The CA that signed the server's certificate (PEM), for the client's pinned CA.
    pub ca: PathBuf,
}

/// Why nginx cannot run here, if it cannot.
pub fn missing() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (nginx's workers read the publication as root)".into());
    }
    for tool in [NGINX, "/usr/bin/openssl"] {
        if !Path::new(tool).exists() {
            return Some(format!("{tool} is missing (install nginx-light / openssl)"));
        }
    }
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Runner::new()
        .run_in("openssl", args, Some(dir), Some(Duration::from_secs(60)))
        .expect("run openssl");
    assert!(
        out.success(),
        "openssl {args:?}: {}",
        out.describe_failure()
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it, both ECDSA P-256.
fn make_certificates(dir: &Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut ca = vec!["req", "-x509", "-nodes", "-days", "2"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=bench CA",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req", "-new", "-nodes"];
    csr.extend(ec);
    csr.extend(["-keyout", "server.key", "-out", "server.csr"]);
    csr.extend(["-subj", "/CN=127.0.0.1"]);
    openssl(dir, &csr);
    fs::write(
        dir.join("san.ext"),
        "subjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\n\
         keyUsage = digitalSignature\nextendedKeyUsage = serverAuth\n",
    )
    .expect("write the certificate extensions");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    );
}

fn config(dir: &Path, root: &Path, ports: &[u16; 4]) -> String {
    let d = dir.display();
    let mut servers = String::new();
    for l in Listener::ALL {
        let port = ports[l.index()];
        let ssl = if l.tls() { " ssl" } else { "" };
        let keep = if l.keep_alive() { "75s" } else { "0" };
        servers.push_str(&format!(
            "    server {{\n        listen 127.0.0.1:{port}{ssl};\n        keepalive_timeout {keep};\n"
        ));
        if l.tls() {
            servers.push_str(&format!(
                "        ssl_certificate {d}/server.pem;\n        ssl_certificate_key {d}/server.key;\n"
            ));
            servers.push_str("        ssl_session_tickets off;\n");
        }
        // Agents' logs and backups are never served over HTTP.
        servers.push_str(&format!(
            "        root {};\n        location ~ ^/[^/]+/(logs|backup)(/|$) {{ return 404; }}\n    }}\n",
            root.display()
        ));
    }
    format!(
        "user root root;\nworker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n    log_format bench '$status $ssl_session_reused';\n    access_log {d}/access.log bench;\n    client_body_temp_path {d}/body;\n\
         \x20   proxy_temp_path {d}/proxy;\n    fastcgi_temp_path {d}/fastcgi;\n\
         \x20   default_type application/octet-stream;\n    sendfile on;\n    etag on;\n\
         \x20   ssl_protocols TLSv1.2 TLSv1.3;\n{servers}}}\n"
    )
}

impl Nginx {
    /// Starts nginx serving `root` (its URL paths are paths under it). `None` (after saying
    /// why) when this machine cannot run it and CI is not set.
    pub fn start(root: &Path) -> Option<Nginx> {
        if !super::support::prerequisite("the nginx benchmark", missing()) {
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        make_certificates(dir.path());
        for _ in 0..5 {
            let ports = [(); 4].map(|_| free_port());
            let conf = dir.path().join("nginx.conf");
            fs::write(&conf, config(dir.path(), root, &ports)).expect("write nginx.conf");
            let mut child = Command::new(NGINX)
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .arg("-c")
                .arg(&conf)
                .args(["-g", "daemon off;"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {NGINX}: {e}"));
            if ready(&mut child, &ports) {
                return Some(Nginx {
                    ca: dir.path().join("ca.pem"),
                    dir,
                    ports,
                    child: Some(child),
                });
            }
            stop(child);
            // Another process may have taken a port between the probe and nginx's bind.
            eprintln!(
                "nginx did not start; its log:\n{}",
                fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
            );
        }
        panic!("nginx did not start in 5 attempts");
    }

    pub fn port(&self, l: Listener) -> u16 {
        self.ports[l.index()]
    }

    fn master(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn workers(&self) -> Vec<u32> {
        self.master().map(super::children_of).unwrap_or_default()
    }

    /// CPU time of the master and its workers so far, in seconds.
    pub fn cpu_s(&self) -> f64 {
        self.master()
            .into_iter()
            .chain(self.workers())
            .filter_map(schedstat_ns)
            .sum::<u64>() as f64
            / 1e9
    }

    /// The access log's lines (`<status> <TLS session reused: r or .>`), how often each.
    pub fn answers(&self) -> std::collections::BTreeMap<String, usize> {
        let mut m = std::collections::BTreeMap::new();
        let log = fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
        for l in log.lines() {
            let mut f = l.split_whitespace();
            let what = match (f.next(), f.next()) {
                (Some(code), Some("r")) => format!("{code} (TLS resumed)"),
                (Some(code), _) => code.to_string(),
                _ => continue,
            };
            *m.entry(what).or_insert(0) += 1;
        }
        m
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            stop(c);
        }
    }
}

/// True once every listener accepts and both workers are up; false when nginx exited.
fn ready(child: &mut Child, ports: &[u16; 4]) -> bool {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        let up = ports
            .iter()
            .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok());
        if up && super::children_of(child.id()).len() == 2 {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

/// SIGTERM (nginx's fast shutdown), then SIGKILL after 5 s; reaped either way.
fn stop(mut c: Child) {
    use nix::sys::signal::{kill, Signal};
    let _ = kill(nix::unistd::Pid::from_raw(c.id() as i32), Signal::SIGTERM);
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Nanoseconds a process has spent on a CPU (user and system), from `/proc/<pid>/schedstat`.
pub fn schedstat_ns(pid: u32) -> Option<u64> {
    fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
