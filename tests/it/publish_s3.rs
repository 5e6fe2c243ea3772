//! `tiffin fleet publish --to s3://bucket/prefix` through the real binary, to a real
//! S3-compatible server on loopback (moto's, from PyPI; `support::s3`), behind a relay that
//! counts the bytes on the wire: the bucket gets each host's layout with `current.txt` naming the
//! live generation; the next publish sends only what changed (unchanged files are copied inside
//! the bucket) and deletes the generations pruned locally; a server that is down fails the
//! publish, naming the endpoint, and leaves the local publication as it was.
//!
//! Needs `moto_server` (packaging/deps.sh installs it): fails under `CI=true` without it, skipped
//! otherwise.

use crate::fleet_support::TestFleet;
use crate::support::{self, relay::Relay, s3::S3Server};
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

const BIG: usize = 256 * 1024;

fn server(test: &str) -> Option<S3Server> {
    if !support::prerequisite(test, support::s3::missing()) {
        return None;
    }
    let s3 = S3Server::start(&format!("fleet-{}", support::random_suffix(4)));
    s3.allow_anonymous_read("pub");
    Some(s3)
}

/// `tiffin fleet publish --to URL` with the server's environment, the endpoint replaced by
/// `endpoint`.
fn publish_to(fleet: &TestFleet, s3: &S3Server, endpoint: &str, url: &str) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tiffin"));
    c.args(["fleet", "publish", "--to", url, "--fleet"])
        .arg(fleet.repo());
    for (k, v) in s3.env() {
        c.env(k, v);
    }
    c.env("AWS_ENDPOINT", endpoint)
        .output()
        .expect("run tiffin")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every regular file under `dir`, by path relative to it, with its bytes.
fn local_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, rel)) = todo.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                todo.push((e.path(), r));
            } else if ft.is_file() {
                out.insert(r, fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

/// The bucket under `pub/<host>/` must be exactly the local live generations plus
/// `current.txt` naming generation `n`, byte for byte.
fn assert_bucket_mirrors(s3: &S3Server, fleet: &TestFleet, host: &str, n: u64) {
    let base = format!("pub/{host}/");
    let mut want: BTreeMap<String, Vec<u8>> = local_files(&fleet.host_pub(host).join("gens"))
        .into_iter()
        .map(|(k, v)| (format!("{base}gens/{k}"), v))
        .collect();
    want.insert(
        format!("{base}current.txt"),
        format!("gens/{n}\n").into_bytes(),
    );
    let have: Vec<String> = s3.list(&base).into_iter().map(|(k, _, _)| k).collect();
    assert_eq!(
        have,
        want.keys().cloned().collect::<Vec<_>>(),
        "the bucket's keys"
    );
    for (k, bytes) in &want {
        let (status, body) = s3.get(k);
        assert_eq!((status, &body), (200, bytes), "anonymous GET of {k}");
    }
}

#[test]
fn publish_to_s3_uploads_the_layout_then_only_what_changed_and_deletes_pruned_generations() {
    let Some(s3) = server("publish_to_s3_uploads_the_layout") else {
        return;
    };
    let relay = Relay::start(s3.port);
    let via_relay = format!("http://127.0.0.1:{}", relay.port);
    let fleet = TestFleet::new();
    fleet.write_config(&[("laptop", "")], "keep_generations = 1");
    fleet.write(
        "hosts/laptop/configuration.nix",
        "{ networking.hostName = \"laptop\"; }\n",
    );
    fleet.write("hosts/laptop/files/etc/motd", "hello\n");
    fleet.write(
        "hosts/laptop/files/big.bin",
        &"0123456789abcdef".repeat(BIG / 16),
    );
    let url = format!("s3://{}/pub", s3.bucket);

    let o = publish_to(&fleet, &s3, &via_relay, &url);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(fleet.current("laptop"), Some(1));
    assert_bucket_mirrors(&s3, &fleet, "laptop", 1);
    let first = relay.settle();
    assert!(
        first.up > BIG as u64,
        "the first upload sends everything: {first:?}"
    );

    // One small change: a new generation, the old one pruned locally (keep_generations = 1).
    relay.reset();
    fleet.write("hosts/laptop/files/etc/motd", "hello again\n");
    let o = publish_to(&fleet, &s3, &via_relay, &url);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(fleet.gens_entries("laptop"), ["2"]);
    assert_bucket_mirrors(&s3, &fleet, "laptop", 2);
    let second = relay.settle();
    assert!(
        second.up < (BIG / 4) as u64,
        "the unchanged {BIG}-byte file is not sent again: {second:?} (first: {first:?})"
    );
    let objects = local_files(&fleet.host_pub("laptop").join("gens/2")).len();
    let out = String::from_utf8_lossy(&o.stdout);
    // The changed file, the new manifest and current.txt cross the wire; the rest is copied.
    let line = format!(
        "uploaded 3 objects ({} bytes), copied {} unchanged in the bucket",
        "hello again\n".len() as u64
            + fs::metadata(fleet.host_pub("laptop").join("gens/2/manifest.json"))
                .unwrap()
                .len()
            + "gens/2\n".len() as u64,
        objects - 2
    );
    assert!(out.contains(&line), "want {line:?} in\n{}", text(&o));
    assert!(out.contains(&format!("{objects} deleted")), "{}", text(&o));

    // Nothing changed: nothing is uploaded, copied or deleted.
    let o = publish_to(&fleet, &s3, &via_relay, &url);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let line = format!("uploaded 0 objects (0 bytes), copied 0 unchanged in the bucket, {} already there, 0 deleted", objects + 1);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&line),
        "want {line:?} in\n{}",
        text(&o)
    );
}

#[test]
fn publish_to_s3_while_the_server_is_down_fails_naming_the_endpoint_and_keeps_the_local_publication(
) {
    let Some(mut s3) = server("publish_to_s3_while_the_server_is_down") else {
        return;
    };
    let fleet = TestFleet::new();
    fleet.write_config(&[("laptop", "")], "");
    fleet.write("hosts/laptop/configuration.nix", "{ }\n");
    let url = format!("s3://{}/pub", s3.bucket);
    let endpoint = s3.endpoint();
    let o = publish_to(&fleet, &s3, &endpoint, &url);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let before = local_files(&fleet.host_pub("laptop"));

    s3.stop();
    fleet.write(
        "hosts/laptop/configuration.nix",
        "{ networking.hostName = \"x\"; }\n",
    );
    let started = std::time::Instant::now();
    let o = publish_to(&fleet, &s3, &endpoint, &url);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for needle in [
        endpoint.as_str(),
        "host laptop",
        &url,
        "list",
        "the local publication is unchanged",
    ] {
        assert!(err.contains(needle), "want {needle:?} in\n{}", text(&o));
    }
    assert!(
        started.elapsed().as_secs() < 30,
        "fails within seconds: {:?}",
        started.elapsed()
    );
    // The local publish itself went through and is intact: generation 2 complete and current,
    // generation 1 still there.
    assert_eq!(fleet.current("laptop"), Some(2));
    crate::fleet_support::verify_generation(&fleet.host_pub("laptop").join("gens/2")).unwrap();
    let after = local_files(&fleet.host_pub("laptop"));
    for (k, v) in &before {
        if k.starts_with("gens/1/") {
            assert_eq!(after.get(k), Some(v), "{k} unchanged");
        }
    }
}

/// `tiffin agent --once` on a machine whose only source is the S3 server's HTTP endpoint for
/// this host (`http://127.0.0.1:<port>/<bucket>/pub/<prefix>/`, anonymous GETs as the bucket
/// policy allows): the NixOS stand-in on real Nix (without Nix, outside CI, the fake).
#[test]
fn an_agent_cycle_over_http_installs_what_the_s3_server_serves() {
    use crate::pipeline_support::{
        default_is_real, install_fake_nixos, install_real_nixos, knob_flake_nix, system_section,
        FIRST_CONFIGURATION,
    };
    const PREFIX: &str = "Zm9yLXRoZS1sYXB0b3Atb25seQ";
    let Some(s3) = server("an_agent_cycle_over_http_installs_what_the_s3_server_serves") else {
        return;
    };
    let fleet = TestFleet::new();
    fleet.write_config(&[("laptop", &format!("http_prefix = {PREFIX:?}"))], "");
    let d = fleet.tmp.path().join("machine");
    let (root, files_root, state) = (d.join("nixos"), d.join("fsroot"), d.join("state"));
    for p in [&root, &files_root] {
        fs::create_dir_all(p).unwrap();
    }
    let repo = fleet.repo().join("hosts/laptop");
    fs::create_dir_all(&repo).unwrap();
    let none = d.join("no-file-publication");
    if default_is_real() {
        fs::write(repo.join("flake.nix"), knob_flake_nix("laptop")).unwrap();
        fs::write(repo.join("configuration.nix"), FIRST_CONFIGURATION).unwrap();
        install_real_nixos(&root, &none, &repo);
    } else {
        fs::write(repo.join("flake.nix"), "{ outputs = { self }: { }; }\n").unwrap();
        fs::write(repo.join("configuration.nix"), "{ ... }: { }\n").unwrap();
        install_fake_nixos(&root, &none, &repo, "laptop");
    }
    fleet.write("hosts/laptop/files/etc/motd", "served from a bucket\n");
    let url = format!("s3://{}/pub", s3.bucket);
    let o = publish_to(&fleet, &s3, &s3.endpoint(), &url);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // The host's path in the bucket is its unguessable prefix, not its name.
    assert!(s3.list(&format!("pub/{PREFIX}/")).len() > 2);
    assert!(s3.list("pub/laptop/").is_empty());
    // The web root and the chroot are gone from under the agent: only the bucket serves it.
    fs::remove_dir_all(fleet.chroot()).unwrap();

    let source = format!("{}/{}/pub/{PREFIX}/", s3.endpoint(), s3.bucket);
    let config = format!(
        "host = \"laptop\"\nsource = {source:?}\ntrusted_key = {:?}\nstate_dir = {:?}\n\
         socket = \"{}/agent.sock\"\nhttp_trigger = \"\"\nverify_timeout = \"3s\"\n\n{}",
        fleet.public_key_path().display().to_string(),
        state.display().to_string(),
        state.display(),
        system_section(&root, &files_root)
    );
    let config_path = d.join("agent.toml");
    fs::write(&config_path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tiffin"))
        .args(["agent", "--once", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", "warn")
        .env("TIFFIN_STANDIN_ROOT", &root)
        .output()
        .expect("running tiffin");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        fs::read(files_root.join("etc/motd")).unwrap(),
        b"served from a bucket\n"
    );
}
