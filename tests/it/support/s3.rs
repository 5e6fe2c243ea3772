//! An S3-compatible server on loopback for the `fleet publish --to s3://…` tests: moto's
//! server (PyPI `moto[server]`, installed by packaging/deps.sh), in memory, started per test and
//! killed on drop. It checks no credentials and serves objects to anonymous GETs by path
//! (`http://127.0.0.1:<port>/<bucket>/<key>`), as a bucket with public read of its prefix does.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running S3 server with one bucket.
pub struct S3Server {
    child: Child,
    pub port: u16,
    pub bucket: String,
    _log: tempfile::NamedTempFile,
}

/// Why this machine cannot run an S3 server (for `support::prerequisite`).
pub fn missing() -> Option<String> {
    let ok = Command::new("moto_server")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (!ok).then(|| "needs moto_server (PyPI moto[server]; packaging/deps.sh installs it)".into())
}

impl S3Server {
    /// Starts the server and creates the bucket `bucket`.
    pub fn start(bucket: &str) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let log = tempfile::NamedTempFile::new().expect("temp log");
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("log"))
            .spawn()
            .expect("moto_server starts");
        let mut s = Self {
            child,
            port,
            bucket: bucket.to_string(),
            _log: log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {port}"
            );
            assert!(s.child.try_wait().unwrap().is_none(), "moto_server exited");
            std::thread::sleep(Duration::from_millis(50));
        }
        let (status, _) = s.request("PUT", &format!("/{bucket}"), &[]);
        assert_eq!(status, 200, "create bucket {bucket}");
        s
    }

    /// A bucket policy that lets anyone GET the objects under `prefix` (as a publication served
    /// from the bucket's website endpoint or a CDN needs); listing stays private.
    pub fn allow_anonymous_read(&self, prefix: &str) {
        let policy = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::{}/{prefix}/*"}}]}}"#,
            self.bucket
        );
        let (status, body) = self.request(
            "PUT",
            &format!("/{}?policy", self.bucket),
            policy.as_bytes(),
        );
        assert!(
            (200..300).contains(&status),
            "bucket policy: {status} {body:?}"
        );
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment `tiffin fleet publish --to` reads (the server checks no credentials).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// An anonymous GET of `key` in the bucket: status and body.
    pub fn get(&self, key: &str) -> (u16, Vec<u8>) {
        self.request("GET", &format!("/{}/{key}", self.bucket), &[])
    }

    /// Every key under `prefix` with its ETag and size (ListObjectsV2, all pages).
    pub fn list(&self, prefix: &str) -> Vec<(String, String, u64)> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let mut q = format!("/{}?list-type=2&prefix={prefix}", self.bucket);
            if !token.is_empty() {
                q.push_str(&format!("&continuation-token={token}"));
            }
            let (status, body) = self.request("GET", &q, &[]);
            assert_eq!(status, 200, "list {prefix}");
            let body = String::from_utf8(body).unwrap();
            for item in body.split("<Contents>").skip(1) {
                let field = |tag: &str| {
                    let start = item.find(&format!("<{tag}>")).unwrap() + tag.len() + 2;
                    let end = item.find(&format!("</{tag}>")).unwrap();
                    item[start..end].to_string()
                };
                out.push((field("Key"), field("ETag"), field("Size").parse().unwrap()));
            }
            match body.split_once("<NextContinuationToken>") {
                Some((_, rest)) => token = rest.split('<').next().unwrap().to_string(),
                None => return out,
            }
        }
    }

    /// One HTTP/1.1 request on a new connection; status and body.
    fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let mut c = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to moto");
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        );
        c.write_all(head.as_bytes()).unwrap();
        c.write_all(body).unwrap();
        let mut resp = Vec::new();
        c.read_to_end(&mut resp).unwrap();
        let split = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("HTTP head");
        let head = String::from_utf8_lossy(&resp[..split]).to_string();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let mut body = resp[split + 4..].to_vec();
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body = dechunk(&body);
        }
        (status, body)
    }

    /// Stops the server (the port then refuses connections).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n =
            usize::from_str_radix(std::str::from_utf8(&b[..line_end]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[line_end + 2..line_end + 2 + n]);
        b = &b[line_end + 4 + n..];
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
