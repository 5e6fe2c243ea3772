//! files/ sealed to each host's SSH key (fleet.toml `[secrets] seal = true`): the publication
//! holds only age files; the host opens them in memory with the key it uses for SFTP and
//! installs the plain files with their owner and mode; a sealed file that does not open fails the
//! cycle before any file changes; unchanged secrets make no new generation.
//!
//! The sshd tests need root and `/usr/sbin/sshd` (they fail under `CI=true` without them and are
//! skipped otherwise); the others need `ssh-keygen`.

use crate::pipeline_sshd::{SshMachine, HOST};
use crate::support;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::publication::{write_manifest, FleetHost, FleetRepo};
use tiffin::config::FleetConfig;
use tiffin::fleet::{publish_host, HostResult, PublishOptions};
use tiffin::manifest::{tree_hash, Manifest};

/// `ssh-keygen -t ed25519` into `dir/name`; the public key line.
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let p = dir.join(name);
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&p)
        .status()
        .expect("ssh-keygen runs (openssh-client)");
    assert!(st.success());
    let public = fs::read_to_string(p.with_extension("pub")).unwrap();
    (p, public.trim().to_string())
}

/// The fleet's config with sealing on.
fn sealing(config: &FleetConfig) -> FleetConfig {
    let mut c = config.clone();
    c.secrets.seal = true;
    c
}

/// `fleet publish HOST` with `config`; the live generation after it and whether it is new.
fn publish(fleet: &Path, config: &FleetConfig, host: &str, opts: &PublishOptions) -> (u64, bool) {
    let r = publish_host(fleet, config, host, opts).unwrap_or_else(|e| panic!("publish: {e}"));
    match r.result {
        HostResult::Published { generation, .. } => (generation, true),
        HostResult::Unchanged { generation } => (generation, false),
        other => panic!("publish {host}: {other:?}"),
    }
}

/// Every file under `root` whose bytes contain `needle`.
fn files_containing(root: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                todo.push(e.path());
            } else if ft.is_file() {
                let data = fs::read(e.path()).unwrap();
                if data.windows(needle.len()).any(|w| w == needle) {
                    hits.push(e.path());
                }
            }
        }
    }
    hits
}

const RULES: &str = "# files.toml marker: tiffin-rules-{tag}\n[\"etc/app/secret\"]\nmode = \"0640\"\nowner = \"daemon\"\ngroup = \"daemon\"\n";

#[test]
fn no_byte_of_a_secret_is_under_the_chroot_root_and_the_host_installs_it_through_sshd() {
    let Some(m) = SshMachine::new() else { return };
    let tag = support::random_suffix(8);
    let secret = format!("password=tiffin-secret-{tag}\n");
    m.write("files/etc/app/secret", secret.as_bytes());
    m.write("files.toml", RULES.replace("{tag}", &tag).as_bytes());
    let fleet = m.srv.fleet();
    let config = sealing(&fleet.config);
    let (g, _) = publish(&fleet.dir, &config, HOST, &PublishOptions::default());

    // Neither the secret nor files.toml, anywhere under the chroot root (every generation).
    let chroot = &config.chroot;
    for needle in [
        format!("tiffin-secret-{tag}"),
        format!("tiffin-rules-{tag}"),
    ] {
        let hits = files_containing(chroot, needle.as_bytes());
        assert!(hits.is_empty(), "{needle} in the clear: {hits:?}");
    }
    let manifest = fleet.current_manifest(HOST);
    let key = &config.hosts[HOST].key;
    let sealed = manifest.sealed.as_ref().expect("the manifest says sealed");
    assert_eq!(sealed.to, tiffin::seal::fingerprint(key).unwrap());

    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    let installed = m.files_root.join("etc/app/secret");
    assert_eq!(fs::read_to_string(&installed).unwrap(), secret);
    let meta = fs::metadata(&installed).unwrap();
    let daemon = nix::unistd::User::from_name("daemon").unwrap().unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!(
        (meta.uid(), meta.gid()),
        (daemon.uid.as_raw(), daemon.gid.as_raw())
    );
    // Opened in memory: nothing plain in the agent's state directory either.
    let in_state = files_containing(&m.state, format!("tiffin-secret-{tag}").as_bytes());
    assert!(in_state.is_empty(), "{in_state:?}");
    assert!(m.history().iter().any(|(o, _)| o == "updated"), "{g}");
}

#[test]
fn a_sealed_file_altered_on_the_server_is_refused_before_any_file_changes() {
    let Some(m) = SshMachine::new() else { return };
    // Unsigned, so that the server can make the manifest match what it altered: only the
    // seal stands in the way (a signed manifest is refused even earlier, at fetch).
    m.write_config_raw("allow_unsigned = true");
    let fleet = m.srv.fleet();
    let config = sealing(&fleet.config);
    let opts = PublishOptions {
        unsigned: true,
        ..Default::default()
    };
    m.write("files/etc/app/secret", b"first\n");
    publish(&fleet.dir, &config, HOST, &opts);
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    let installed = m.files_root.join("etc/app/secret");
    assert_eq!(fs::read(&installed).unwrap(), b"first\n");

    m.write("files/etc/app/secret", b"second\n");
    m.write("files/etc/app/other", b"also new\n");
    let (g, _) = publish(&fleet.dir, &config, HOST, &opts);
    // The server truncates the sealed copy and rewrites the manifest to match.
    let sealed_path = |g: u64| {
        m.srv
            .host(HOST)
            .dir
            .join(format!("gens/{g}/tree/files/etc/app/secret"))
    };
    let mut data = fs::read(sealed_path(g)).unwrap();
    data.truncate(data.len() - 16);
    replace_sealed(&m, g, &data);
    let refused = |why: &str| {
        let (code, out) = m.run_once();
        assert_ne!(code, 0, "{out}");
        assert!(
            out.contains("files/etc/app/secret") && out.contains(why),
            "{out}"
        );
        assert_eq!(m.history().last().unwrap().1, "files", "{:?}", m.history());
        // Nothing changed: the old secret, and the other new file was not installed.
        assert_eq!(fs::read(&installed).unwrap(), b"first\n");
        assert!(!m.files_root.join("etc/app/other").exists());
    };
    refused("cannot be opened");

    // Then one sealed to another key (its public half is all a server needs).
    m.write("files/etc/app/secret", b"third\n");
    let (g, _) = publish(&fleet.dir, &config, HOST, &opts);
    let t = tempfile::tempdir().unwrap();
    let (_, other) = keygen(t.path(), "other");
    let to = tiffin::seal::Recipients::new(&other, &[]).unwrap();
    replace_sealed(&m, g, &tiffin::seal::seal(b"evil\n", &to).unwrap());
    refused("not sealed to this machine's key");
}

/// Puts `data` as generation `g`'s sealed secret and rewrites its manifest to match.
fn replace_sealed(m: &SshMachine, g: u64, data: &[u8]) {
    let gen_dir = m.srv.host(HOST).dir.join("gens").join(g.to_string());
    fs::write(gen_dir.join("tree/files/etc/app/secret"), data).unwrap();
    let mut manifest: Manifest = m.srv.fleet().current_manifest(HOST);
    let e = manifest
        .entries
        .iter_mut()
        .find(|e| e.path == "files/etc/app/secret")
        .unwrap();
    e.size = Some(data.len() as u64);
    e.sha256 = Some(tiffin::hash::sha256_bytes(data));
    manifest.tree_hash = tree_hash(&manifest.entries);
    write_manifest(&gen_dir, &manifest, m.srv.host(HOST).gid);
}

/// A fleet of two hosts with real keys, publishing without a server (owners kept).
struct TwoHosts {
    _t: tempfile::TempDir,
    fleet: FleetRepo,
    keys: Vec<(PathBuf, String)>,
    opts: PublishOptions,
}

impl TwoHosts {
    fn new() -> Self {
        let t = tempfile::tempdir().unwrap();
        let keys = vec![keygen(t.path(), "a"), keygen(t.path(), "b")];
        let hosts = [
            FleetHost {
                name: "a",
                user: "a",
                key: &keys[0].1,
            },
            FleetHost {
                name: "b",
                user: "b",
                key: &keys[1].1,
            },
        ];
        let chroot = t.path().join("chroot");
        fs::create_dir_all(&chroot).unwrap();
        let fleet = FleetRepo::create(&t.path().join("fleet"), &chroot, &hosts);
        let opts = PublishOptions {
            keep_owner: true,
            ..Default::default()
        };
        Self {
            _t: t,
            fleet,
            keys,
            opts,
        }
    }

    fn write(&self, host: &str, rel: &str, text: &str) {
        let p = self.fleet.host_dir(host).join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    fn publish(&self, config: &FleetConfig, host: &str) -> (u64, bool) {
        publish(&self.fleet.dir, config, host, &self.opts)
    }

    fn sealed_copy(&self, host: &str, rel: &str) -> Vec<u8> {
        fs::read(
            self.fleet
                .config
                .chroot
                .join(host)
                .join("current/tree")
                .join(rel),
        )
        .unwrap()
    }
}

#[test]
fn host_bs_key_cannot_open_host_as_sealed_files() {
    let f = TwoHosts::new();
    let config = sealing(&f.fleet.config);
    f.write("a", "files/etc/a-secret", "only for a\n");
    f.publish(&config, "a");
    let sealed = f.sealed_copy("a", "files/etc/a-secret");
    let a = tiffin::seal::Identity::load(&f.keys[0].0).unwrap();
    let b = tiffin::seal::Identity::load(&f.keys[1].0).unwrap();
    assert_eq!(
        &tiffin::seal::open(&sealed, &a).unwrap()[..],
        b"only for a\n"
    );
    let e = tiffin::seal::open(&sealed, &b).unwrap_err();
    assert!(e.contains("not sealed to this machine's key"), "{e}");
}

#[test]
fn unchanged_secrets_make_no_new_generation_and_one_changed_secret_changes_one_sealed_file() {
    let f = TwoHosts::new();
    let config = sealing(&f.fleet.config);
    f.write("a", "configuration.nix", "{ }\n");
    f.write("a", "files/etc/one", "one\n");
    f.write("a", "files/etc/two", "two\n");
    f.write("a", "files.toml", "[\"etc/one\"]\nmode = \"0644\"\n");
    let (g1, new) = f.publish(&config, "a");
    assert!(new);
    let first = f.fleet.current_manifest("a");
    assert_eq!(
        f.publish(&config, "a"),
        (g1, false),
        "unchanged: no new generation"
    );

    f.write("a", "files/etc/two", "two, changed\n");
    let (g2, new) = f.publish(&config, "a");
    assert!(new && g2 > g1);
    let second = f.fleet.current_manifest("a");
    let changed: Vec<&str> = second
        .files()
        .filter(|e| first.entry(&e.path).map(|o| &o.sha256) != Some(&e.sha256))
        .map(|e| e.path.as_str())
        .collect();
    assert_eq!(changed, ["files/etc/two"]);
}

#[test]
fn a_new_host_key_reseals_everything_and_the_old_plain_generation_is_gone_after_migration() {
    let f = TwoHosts::new();
    let tag = support::random_suffix(8);
    f.write("a", "files/etc/s", &format!("migrating-{tag}\n"));
    // Before sealing: in the clear (today's behaviour for fleets without [secrets]).
    let (g1, _) = f.publish(&f.fleet.config, "a");
    let chroot = f.fleet.config.chroot.clone();
    assert!(!files_containing(&chroot, tag.as_bytes()).is_empty());
    let config = sealing(&f.fleet.config);
    let (g2, new) = f.publish(&config, "a");
    assert!(new && g2 > g1);
    assert!(
        files_containing(&chroot, tag.as_bytes()).is_empty(),
        "migrated"
    );
    assert!(!chroot.join("a/gens").join(g1.to_string()).exists());

    // The host gets a new key: the next publish seals to it.
    let t = tempfile::tempdir().unwrap();
    let (new_key, new_line) = keygen(t.path(), "a2");
    let mut rotated = config.clone();
    rotated.hosts.get_mut("a").unwrap().key = new_line.clone();
    // Until the next publish, `fleet status` says that host a's files are sealed to an old key.
    let status = |c: &FleetConfig| {
        let s = tiffin::fleet::status::fleet_status(c, 1_800_000_000);
        let a = s
            .hosts
            .iter()
            .find(|h| h.host == "a")
            .unwrap()
            .sealed_to_old_key;
        let table =
            tiffin::fleet::status::render_table(&s, tiffin::fleet::status::Style { colour: false });
        (a, table.contains("files sealed to an old key"))
    };
    assert_eq!(status(&config), (false, false));
    assert_eq!(status(&rotated), (true, true));
    let (g3, new) = f.publish(&rotated, "a");
    assert_eq!(status(&rotated), (false, false));
    assert!(new && g3 > g2);
    let m = f.fleet.current_manifest("a");
    assert_eq!(
        m.sealed.unwrap().to,
        tiffin::seal::fingerprint(&new_line).unwrap()
    );
    let sealed = f.sealed_copy("a", "files/etc/s");
    let id = tiffin::seal::Identity::load(&new_key).unwrap();
    assert!(tiffin::seal::open(&sealed, &id).is_ok());
}
