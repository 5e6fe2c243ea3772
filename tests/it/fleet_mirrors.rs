//! `fleet publish` pushing to fleet.toml `[[mirrors]]`: a real primary sshd (the chroots
//! `publish` writes) and a real mirror sshd on loopback (the mirror role: the same host users
//! and Match blocks, root allowed in with the publisher's key). The push sends only the files
//! the mirror lacks, switches `current` last, and a mirror that is down or cut off fails its
//! own row (and `fleet status`'s line), never the publish; the next publish catches it up. An
//! agent cycle over sftp from the mirror's chroot applies what was pushed.
//!
//! Needs root and `/usr/sbin/sshd` (fails under `CI=true` without them, skips otherwise).

use crate::pipeline_sshd::{SshMachine, HOST};
use crate::support::mirror_sshd::MirrorSshd;
use crate::support::relay::Relay;
use crate::support::sshd::Sshd;
use std::fs;
use std::os::unix::fs::MetadataExt;
use tiffin::config::FleetConfig;
use tiffin::fleet::mirror::{status::status_lines, MirrorReport, MirrorResult};
use tiffin::fleet::{publish, PublishOptions, PublishReport};

/// `tiffin fleet publish HOST` with `config` (the test fleet plus its mirrors).
fn publish_with(dir: &std::path::Path, config: &FleetConfig, host: &str) -> PublishReport {
    let opts = PublishOptions {
        hosts: vec![host.to_string()],
        ..Default::default()
    };
    let r = publish(dir, config, &opts).expect("fleet publish");
    assert!(!r.hosts[0].failed(), "{:?}", r.hosts[0].result);
    r
}

fn only_mirror(r: &PublishReport) -> &MirrorReport {
    assert_eq!(r.mirrors.len(), 1, "{:?}", r.mirrors);
    &r.mirrors[0]
}

fn files_in(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for e in fs::read_dir(dir).unwrap().flatten() {
        let t = e.file_type().unwrap();
        if t.is_dir() {
            n += files_in(&e.path());
        } else {
            n += 1;
        }
    }
    n
}

#[test]
fn publish_pushes_only_what_the_mirror_lacks_and_an_agent_cycle_applies_it_from_the_mirror() {
    let Some(m) = SshMachine::new() else { return };
    let mirror = MirrorSshd::start(&m.srv, &[HOST]);
    let fleet = m.srv.fleet();
    let mut config = fleet.config.clone();
    config.mirrors.push(mirror.entry("sftp", mirror.port));
    for i in 0..6 {
        m.write(&format!("notes/{i}.txt"), format!("note {i}\n").as_bytes());
    }
    let r = publish_with(&fleet.dir, &config, HOST);
    let g1 = r.hosts[0].generation().unwrap();
    let row = only_mirror(&r);
    assert_eq!(row.result, MirrorResult::Pushed, "{row:?}");
    let primary_gen = tiffin::publication::Publication::new(&config.chroot, HOST);
    assert_eq!(
        row.files,
        files_in(&primary_gen.generation_dir(g1)),
        "{row:?}"
    );
    assert_eq!(mirror.current(HOST), Some(g1));

    // Two files change (one of them the system's configuration): they and the new manifest
    // travel, nothing else.
    m.write("notes/3.txt", b"note 3, changed\n");
    m.write(
        "configuration.nix",
        b"{ ... }: { services.openssh.enable = true; }\n",
    );
    let r = publish_with(&fleet.dir, &config, HOST);
    let g2 = r.hosts[0].generation().unwrap();
    assert_eq!(g2, g1 + 1);
    let row = only_mirror(&r);
    assert_eq!(row.result, MirrorResult::Pushed, "{row:?}");
    assert_eq!(
        row.files, 3,
        "only the changed files and the manifest: {row:?}"
    );
    assert_eq!(mirror.current(HOST), Some(g2));
    let tree = |g: u64, f: &str| mirror.host_dir(HOST).join(format!("gens/{g}/tree/{f}"));
    // The unchanged files are hard links to the previous generation's on the mirror too.
    assert_eq!(
        fs::metadata(tree(g1, "notes/0.txt")).unwrap().ino(),
        fs::metadata(tree(g2, "notes/0.txt")).unwrap().ino()
    );
    assert_eq!(
        fs::read(tree(g2, "notes/3.txt")).unwrap(),
        b"note 3, changed\n"
    );
    // Owners and modes as the primary's (the host's group reads, nobody else).
    let meta = fs::metadata(tree(g2, "notes/3.txt")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, m.srv.host(HOST).gid));
    assert_eq!(meta.mode() & 0o777, 0o640);

    // Nothing new: nothing sent, the row says unchanged.
    let r = publish_with(&fleet.dir, &config, HOST);
    let row = only_mirror(&r);
    assert_eq!(
        (row.result.clone(), row.files),
        (MirrorResult::Unchanged, 0)
    );
    assert_eq!(
        status_lines(&config),
        [format!("mirror {}: up to date", config.mirrors[0].url)]
    );

    // The primary is gone: the agent, pointed at the mirror, applies what was pushed.
    m.srv.kill();
    m.use_server(mirror.port, &mirror.known_hosts_for(mirror.port));
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}\n{}", mirror.log_text());
    assert_eq!(m.history().last().map(|h| h.0.as_str()), Some("updated"));
    assert_eq!(
        fs::read(m.state.join("tree/notes/3.txt")).unwrap(),
        b"note 3, changed\n"
    );
    // Its report went to the mirror's logs/ (its source).
    let logs: Vec<String> = fs::read_dir(mirror.host_dir(HOST).join("logs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        logs.iter()
            .any(|n| n.ends_with(&format!("-g{g2}-updated.json"))),
        "{logs:?}"
    );
}

#[test]
fn a_mirror_that_is_down_fails_its_row_not_the_publish_and_the_next_publish_catches_it_up() {
    let Some(srv) = Sshd::start(&["web"]) else {
        return;
    };
    let mirror = MirrorSshd::start(&srv, &["web"]);
    let fleet = srv.fleet();
    let mut config = fleet.config.clone();
    config.mirrors.push(mirror.entry("sftp", mirror.port));
    fs::write(fleet.host_dir("web").join("a.txt"), "one\n").unwrap();
    let g1 = publish_with(&fleet.dir, &config, "web").hosts[0]
        .generation()
        .unwrap();
    assert_eq!(mirror.current("web"), Some(g1));

    // The mirror in fleet.toml, for the command line.
    let entry = &config.mirrors[0];
    let mut toml = fs::read_to_string(fleet.dir.join("fleet.toml")).unwrap();
    toml.push_str(&format!(
        "\n[[mirrors]]\nurl = {:?}\nidentity = {:?}\nknown_hosts = {:?}\n",
        entry.url,
        entry.identity.as_ref().unwrap().display().to_string(),
        entry.known_hosts.as_ref().unwrap().display().to_string()
    ));
    fs::write(fleet.dir.join("fleet.toml"), toml).unwrap();
    assert_eq!(
        FleetConfig::load(&fleet.dir).unwrap().mirrors,
        config.mirrors
    );

    mirror.kill();
    fs::write(fleet.host_dir("web").join("a.txt"), "two\n").unwrap();
    let tiffin = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tiffin"))
            .args(args)
            .arg("--fleet")
            .arg(&fleet.dir)
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let (code, table, err) = tiffin(&["fleet", "publish", "-m", "two", "web"]);
    assert_eq!(
        code,
        Some(0),
        "a mirror down does not fail the publish: {table}{err}"
    );
    let g2 = g1 + 1;
    assert_eq!(
        fleet.current_manifest("web").generation,
        g2,
        "the primary published"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with(&entry.url))
        .unwrap_or_else(|| panic!("no row for the mirror: {table}"));
    assert!(
        row.contains("FAILED: ") && row.contains("127.0.0.1"),
        "{row}"
    );
    assert!(
        err.contains(&format!("warning: mirror {}", entry.url)),
        "{err}"
    );
    let (code, status, err) = tiffin(&["fleet", "status"]);
    assert_eq!(code, Some(0), "{err}");
    let line = status
        .lines()
        .find(|l| l.starts_with("mirror "))
        .unwrap_or_else(|| panic!("no mirror line: {status}"));
    assert!(line.contains(": FAILED at "), "{line}");
    assert!(
        line.contains(&format!("behind: web g{g1} (primary g{g2})")),
        "{line}"
    );
    let (_, json, _) = tiffin(&["fleet", "status", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["mirrors"][0]["state"], "failed", "{json}");
    assert_eq!(
        json["mirrors"][0]["behind"][0],
        serde_json::json!(["web", g1, g2])
    );
    assert_eq!(mirror.current("web"), Some(g1));

    // Back up: the next publish, with nothing new to publish, catches it up. The primary's
    // `current.txt` (for HTTP readers) goes along, after the generation.
    let txt = config.chroot.join("web/current.txt");
    fs::write(&txt, format!("gens/{g2}\n")).unwrap();
    mirror.restart();
    let r = publish_with(&fleet.dir, &config, "web");
    assert_eq!(r.hosts[0].generation(), Some(g2));
    let row = only_mirror(&r);
    assert_eq!(row.result, MirrorResult::Pushed, "{row:?}");
    assert_eq!(row.files, 2, "{row:?}");
    assert_eq!(mirror.current("web"), Some(g2));
    assert_eq!(
        fs::read_to_string(mirror.host_dir("web").join("current.txt")).unwrap(),
        format!("gens/{g2}\n")
    );
    // A manifest rewritten in place on the primary (`publish` signs an old one again) is sent
    // again, alone.
    let manifest = config.chroot.join(format!("web/gens/{g2}/manifest.json"));
    fs::File::options()
        .write(true)
        .open(&manifest)
        .unwrap()
        .set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(60))
        .unwrap();
    let row = only_mirror(&publish_with(&fleet.dir, &config, "web")).clone();
    assert_eq!((row.result, row.files), (MirrorResult::Pushed, 1));
    assert_eq!(
        status_lines(&config),
        [format!("mirror {}: up to date", config.mirrors[0].url)]
    );
    let state: serde_json::Value =
        serde_json::from_slice(&fs::read(config.chroot.join(".tiffin-mirrors.json")).unwrap())
            .unwrap();
    assert_eq!(state["mirrors"][&config.mirrors[0].url]["hosts"]["web"], g2);
    assert!(state["mirrors"][&config.mirrors[0].url]["last_error"].is_null());

    // The generations the primary prunes go from the mirror too, after `current` moved.
    config.keep_generations = 1;
    fs::write(fleet.host_dir("web").join("a.txt"), "three\n").unwrap();
    let r = publish_with(&fleet.dir, &config, "web");
    let g3 = r.hosts[0].generation().unwrap();
    assert_eq!(only_mirror(&r).result, MirrorResult::Pushed);
    let left: Vec<String> = fs::read_dir(mirror.host_dir("web").join("gens"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, [g3.to_string()]);
    assert_eq!(mirror.current("web"), Some(g3));
}

#[test]
fn a_push_cut_midway_leaves_the_mirror_on_its_last_complete_generation() {
    let Some(srv) = Sshd::start(&["web"]) else {
        return;
    };
    let mirror = MirrorSshd::start(&srv, &["web"]);
    let relay = Relay::start(mirror.port);
    let fleet = srv.fleet();
    let mut config = fleet.config.clone();
    config.mirrors.push(mirror.entry("sftp", relay.port));
    fs::write(fleet.host_dir("web").join("a.txt"), "one\n").unwrap();
    let g1 = publish_with(&fleet.dir, &config, "web").hosts[0]
        .generation()
        .unwrap();
    assert_eq!(mirror.current("web"), Some(g1));

    // A large new file, and the connection cut a third of the way through it.
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(fleet.host_dir("web").join("big.bin"), &big).unwrap();
    relay.cut_after(Some(1_000_000));
    let r = publish_with(&fleet.dir, &config, "web");
    let g2 = r.hosts[0].generation().unwrap();
    assert!(
        matches!(only_mirror(&r).result, MirrorResult::Failed { .. }),
        "{:?}",
        r.mirrors
    );
    // `current` still names the complete generation, which is all there.
    assert_eq!(mirror.current("web"), Some(g1));
    let hd = mirror.host_dir("web");
    assert!(hd.join(format!("gens/{g1}/manifest.json")).is_file());
    assert!(!hd.join(format!("gens/{g2}")).exists());

    relay.cut_after(None);
    let r = publish_with(&fleet.dir, &config, "web");
    assert_eq!(
        only_mirror(&r).result,
        MirrorResult::Pushed,
        "{:?}",
        r.mirrors
    );
    assert_eq!(mirror.current("web"), Some(g2));
    assert_eq!(
        fs::read(hd.join(format!("gens/{g2}/tree/big.bin"))).unwrap(),
        big
    );
    let leftovers: Vec<_> = fs::read_dir(hd.join("gens"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn rsync_over_ssh_mirror_sends_only_changed_files() {
    let Some(srv) = Sshd::start(&["web"]) else {
        return;
    };
    let mirror = MirrorSshd::start(&srv, &["web"]);
    let fleet = srv.fleet();
    let mut config = fleet.config.clone();
    config.mirrors.push(mirror.entry("rsync+ssh", mirror.port));
    for i in 0..5 {
        fs::write(
            fleet.host_dir("web").join(format!("{i}.txt")),
            format!("{i}\n"),
        )
        .unwrap();
    }
    let g1 = publish_with(&fleet.dir, &config, "web").hosts[0]
        .generation()
        .unwrap();
    assert_eq!(mirror.current("web"), Some(g1));
    fs::write(fleet.host_dir("web").join("2.txt"), "changed\n").unwrap();
    let r = publish_with(&fleet.dir, &config, "web");
    let g2 = r.hosts[0].generation().unwrap();
    let row = only_mirror(&r);
    assert_eq!(row.result, MirrorResult::Pushed, "{row:?}");
    // The changed file, the manifest, and current.txt (publish rewrites it; rsync counts it).
    assert_eq!(row.files, 3, "{row:?}");
    assert_eq!(mirror.current("web"), Some(g2));
    let meta = fs::metadata(mirror.host_dir("web").join(format!("gens/{g2}/tree/2.txt"))).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, srv.host("web").gid));
    assert_eq!(
        fs::metadata(mirror.host_dir("web").join(format!("gens/{g1}/tree/0.txt")))
            .unwrap()
            .ino(),
        fs::metadata(mirror.host_dir("web").join(format!("gens/{g2}/tree/0.txt")))
            .unwrap()
            .ino()
    );
    // Nothing new: nothing sent.
    let r = publish_with(&fleet.dir, &config, "web");
    let row = only_mirror(&r);
    assert_eq!(
        (row.result.clone(), row.files),
        (MirrorResult::Unchanged, 0)
    );
}

#[test]
fn a_mirror_whose_host_key_is_not_the_pinned_one_gets_nothing() {
    let Some(srv) = Sshd::start(&["web"]) else {
        return;
    };
    let mirror = MirrorSshd::start(&srv, &["web"]);
    let fleet = srv.fleet();
    let mut config = fleet.config.clone();
    let mut entry = mirror.entry("sftp", mirror.port);
    // The primary's key pinned for the mirror's address: someone else answers there.
    entry.known_hosts = Some(srv.known_hosts_for(mirror.port));
    config.mirrors.push(entry);
    fs::write(fleet.host_dir("web").join("a.txt"), "one\n").unwrap();
    let r = publish_with(&fleet.dir, &config, "web");
    let MirrorResult::Failed { error } = &only_mirror(&r).result else {
        panic!("{:?}", r.mirrors)
    };
    assert!(error.contains(&srv.host_key_fingerprint()), "{error}");
    assert!(!mirror.host_dir("web").exists(), "nothing was pushed");
    assert!(!mirror.log_text().contains("Accepted publickey for root"));
}
