//! Shared by the fault-injection tests (`tests/faults_*.rs`): one machine running the NixOS
//! stand-in on real Nix (without Nix, outside CI, the fake NixOS) whose agent fetches over a real
//! chrooted sshd, a fleet repository published with the library
//! publisher (`tiffin::fleet::publish`), a seeded random generator whose seed is printed so a
//! failure can be replayed, and the checks every fault test ends with (a consistent system, no
//! half-written tree ever used, no report lost).
//!
//! Use it with `mod support; mod pipeline_support; mod faults_support;` from a test file.
#![allow(dead_code)]

use crate::pipeline_support::{
    default_is_real, install_fake_nixos, install_real_nixos, system_section, FIRST_CONFIGURATION,
};
use crate::support::sshd::Sshd;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use tiffin::config::fleet::DEFAULT_SIGNING_KEY;
use tiffin::config::FleetConfig;
use tiffin::fleet::publish::{publish_host, HostResult, PublishOptions};
use tiffin::hash;
use tiffin::manifest::{EntryKind, Manifest};

pub const HOST: &str = "laptop";

/// A small xorshift generator: a fault test's randomness must be replayable from its seed.
pub struct Rng(u64);

impl Rng {
    /// Seeded from `TIFFIN_FAULT_SEED` when set (to replay a failure), else from the clock;
    /// the seed is printed either way.
    pub fn from_env(test: &str) -> Self {
        let seed = std::env::var("TIFFIN_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("{test}: seed {seed} (replay with TIFFIN_FAULT_SEED={seed})");
        Self(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.range(0, 100) < percent
    }
}

/// A machine on the NixOS stand-in and real Nix (or the fake NixOS) whose agent reaches a real
/// sshd, and the admin's fleet repository that publishes to that server's chroot.
pub struct SshMachine {
    /// On real Nix (else the fake NixOS).
    pub real: bool,
    /// A string only this machine's flake.nix holds: it finds the trees Nix copied to its store.
    marker: String,
    /// Dropped last: the chroot and the system users go with it.
    pub srv: Sshd,
    pub dir: tempfile::TempDir,
    /// The machine's root: the stand-in's sandbox root ($TIFFIN_STANDIN_ROOT), or the fake's.
    pub root: PathBuf,
    /// The admin's fleet repository (fleet.toml, hosts/laptop/).
    pub fleet: PathBuf,
    pub state: PathBuf,
    pub files_root: PathBuf,
    pub config_path: PathBuf,
    /// Every manifest ever published, by generation (the server prunes old ones).
    pub published: BTreeMap<u64, Manifest>,
    /// What the fake store held before tiffin ran (the machine's initial system).
    initial_store: BTreeSet<String>,
}

impl SshMachine {
    /// `None` when sshd cannot run here (outside CI; under CI=true that panics).
    pub fn new() -> Option<Self> {
        let srv = Sshd::start(&[HOST])?;
        let dir = tempfile::Builder::new()
            .prefix("tiffin-faults-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path().join("nixos");
        let fleet = dir.path().join("fleet");
        let state = dir.path().join("state");
        let files_root = dir.path().join("fsroot");
        for d in [&root, &fleet, &files_root] {
            fs::create_dir_all(d).expect("mkdir");
        }
        let acct = srv.host(HOST).clone();
        let key = fs::read_to_string(acct.identity.with_extension("pub")).expect("client key");
        let key: Vec<&str> = key.split_whitespace().take(2).collect();
        fs::write(
            fleet.join("fleet.toml"),
            format!(
                "chroot = \"{}\"\nserver = \"127.0.0.1\"\nport = {}\nkeep_generations = 3\n\n\
                 [hosts.{HOST}]\nkey = \"{}\"\nuser = \"{}\"\n",
                srv.root.join("chroot").display(),
                srv.port(),
                key.join(" "),
                acct.user
            ),
        )
        .expect("write fleet.toml");
        // Signed by default: the fleet's key, trusted by the agent (agent.toml below).
        tiffin::sign::SecretKey::generate()
            .and_then(|k| k.save(&fleet.join(DEFAULT_SIGNING_KEY), "faults fleet", false))
            .expect("the fleet's signing key");
        let mut m = Self {
            real: default_is_real(),
            marker: crate::real_nix::unique_marker("faults"),
            config_path: dir.path().join("agent.toml"),
            srv,
            dir,
            root,
            fleet,
            state,
            files_root,
            published: BTreeMap::new(),
            initial_store: BTreeSet::new(),
        };
        if m.real {
            m.write("flake.nix", &tree_flake_nix(&m.marker));
            m.write("configuration.nix", FIRST_CONFIGURATION);
            install_real_nixos(&m.root, &m.host_dir(), &m.host_tree());
        } else {
            m.write("flake.nix", "{ outputs = { self }: { }; }\n");
            m.write("configuration.nix", "{ ... }: { }\n");
            install_fake_nixos(&m.root, &m.host_dir(), &m.host_tree(), HOST);
            m.initial_store = names_in(&m.root.join("store")).into_iter().collect();
        }
        m.write_config(m.srv.port(), "");
        Some(m)
    }

    /// `<chroot>/laptop` on the server.
    pub fn host_dir(&self) -> PathBuf {
        self.srv.host(HOST).dir.clone()
    }

    /// `hosts/laptop` in the fleet repository.
    pub fn host_tree(&self) -> PathBuf {
        self.fleet.join("hosts").join(HOST)
    }

    /// agent.toml reaching the server through `port` (sshd's, or a relay's); `extra` is added at
    /// the top level.
    pub fn write_config(&self, port: u16, extra: &str) {
        let acct = self.srv.host(HOST);
        let verify = if extra.contains("verify_timeout") {
            ""
        } else {
            // Generous: a verification that passes returns as soon as it reconnects, and a
            // loaded machine must not turn a good cycle into a rollback.
            "verify_timeout = \"10s\""
        };
        let text = format!(
            "host = \"{HOST}\"\nsource = \"sftp://{user}@127.0.0.1:{port}/\"\n\
             identity = \"{id}\"\nknown_hosts = \"{kh}\"\nstate_dir = \"{state}\"\n\
             socket = \"{sock}\"\nhttp_trigger = \"\"\ntrusted_key = \"{trusted}\"\n{verify}\n{extra}\n\n{system}",
            trusted = tiffin::sign::public_path_for(&self.fleet.join(DEFAULT_SIGNING_KEY)).display(),
            user = acct.user,
            id = acct.identity.display(),
            kh = self.srv.known_hosts_for(port).display(),
            state = self.state.display(),
            sock = self.dir.path().join("agent.sock").display(),
            system = system_section(&self.root, &self.files_root),
        );
        fs::write(&self.config_path, text).expect("write agent.toml");
    }

    pub fn write(&self, rel: &str, content: &str) {
        let p = self.host_tree().join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, content).expect("write a host file");
    }

    pub fn fleet_config(&self) -> FleetConfig {
        FleetConfig::load(&self.fleet).expect("fleet.toml")
    }

    /// Publishes the host's tree with the library publisher; returns the new generation and
    /// remembers its manifest.
    pub fn publish(&mut self) -> u64 {
        let r = publish_host(
            &self.fleet,
            &self.fleet_config(),
            HOST,
            &PublishOptions::default(),
        )
        .expect("publish");
        let g = match r.result {
            HostResult::Published { generation, .. } => generation,
            other => panic!("publish: {other:?}"),
        };
        let m = read_manifest(&self.host_dir().join(format!("gens/{g}")));
        self.published.insert(g, m);
        g
    }

    /// `tiffin agent --once`: exit code and what it printed.
    pub fn run_once(&self) -> (i32, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_tiffin"))
            .args(["agent", "--once", "--config"])
            .arg(&self.config_path)
            .env("RUST_LOG", "warn")
            .env(STANDIN_ROOT, &self.root)
            .output()
            .expect("running tiffin agent --once");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    pub fn current_system(&self) -> PathBuf {
        fs::canonicalize(self.root.join("run/current-system")).expect("current-system")
    }
    pub fn profile_system(&self) -> PathBuf {
        fs::canonicalize(self.root.join("profiles/system")).expect("profile")
    }
    pub fn boot_default(&self) -> PathBuf {
        fs::canonicalize(self.root.join("boot-default")).expect("boot-default")
    }

    pub fn state_json(&self) -> serde_json::Value {
        let b = fs::read(self.state.join("state.json")).expect("state.json");
        serde_json::from_slice(&b).expect("state.json is JSON")
    }

    /// The machine is on one system, never between two: it runs what the profile (the boot
    /// default) names, the agent's journal is closed, and the agent knows what runs.
    pub fn assert_consistent(&self, when: &str) {
        let cur = self.current_system();
        assert_eq!(cur, self.profile_system(), "{when}: running != profile");
        assert_eq!(cur, self.boot_default(), "{when}: running != boot default");
        let st = self.state_json();
        assert!(
            st.get("journal").map_or(true, |j| j.is_null()),
            "{when}: the journal is still open: {st}"
        );
        if let Some(rs) = st.get("running_system").and_then(|v| v.as_str()) {
            assert_eq!(Path::new(rs), cur, "{when}: state.json's running_system");
        }
    }

    /// The agent's `tree` holds exactly what its manifest says (when it has a tree).
    pub fn assert_local_tree_matches_its_manifest(&self, when: &str) {
        let link = self.state.join("tree");
        let Ok(target) = fs::read_link(&link) else {
            return;
        };
        let g: u64 = target
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{when}: tree -> {}", target.display()));
        let m = self.published.get(&g).unwrap_or_else(|| {
            panic!("{when}: the agent's tree is generation {g}, never published")
        });
        let problems = tree_differences(&link, m, false);
        assert!(problems.is_empty(), "{when}: tree g{g}: {problems:?}");
    }

    /// Every tree Nix was ever given to build (it copies each into its store as
    /// `<hash>-source`: on real Nix the ones whose flake.nix holds this machine's marker) is
    /// exactly a published generation's tree, `files/` aside (and the `flake.lock` real Nix
    /// writes): the agent never built from a partial or mixed tree.
    pub fn assert_every_built_tree_was_published(&self) -> usize {
        let store = if self.real {
            PathBuf::from("/nix/store")
        } else {
            self.root.join("store")
        };
        let differences = |dir: &Path, m: &Manifest| -> Vec<String> {
            let mut d = tree_differences(dir, m, true);
            if self.real {
                d.retain(|p| p != "flake.lock: not in the manifest");
            }
            d
        };
        let mut n = 0;
        for e in fs::read_dir(&store).expect("the store").flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.ends_with("-source") || self.initial_store.contains(&name) {
                continue;
            }
            if self.real
                && !fs::read_to_string(e.path().join("flake.nix"))
                    .is_ok_and(|f| f.contains(&self.marker))
            {
                continue;
            }
            n += 1;
            let matches = self
                .published
                .values()
                .any(|m| differences(&e.path(), m).is_empty());
            assert!(
                matches,
                "store/{name} matches no published generation; closest differences: {:?}",
                self.published
                    .iter()
                    .map(|(g, m)| (g, differences(&e.path(), m)))
                    .min_by_key(|(_, d)| d.len())
            );
        }
        n
    }

    /// Names in the server's `logs/` (reports, logs, seen.json; not upload temporaries).
    pub fn delivered(&self) -> BTreeSet<String> {
        names_in(&self.host_dir().join("logs"))
            .into_iter()
            .filter(|n| !n.starts_with('.'))
            .collect()
    }

    /// Names waiting in the agent's outbox.
    pub fn queued(&self) -> BTreeSet<String> {
        names_in(&self.state.join("outbox"))
            .into_iter()
            .filter(|n| !n.starts_with('.'))
            .collect()
    }

    /// The report names the agent's history says it wrote (`<UTC time>-g<N>-<outcome>.json`).
    pub fn reports_in_history(&self) -> BTreeSet<String> {
        let st = self.state_json();
        let mut v = BTreeSet::new();
        for a in st["history"].as_array().cloned().unwrap_or_default() {
            let (Some(g), Some(fin)) = (a["generation"].as_u64(), a["finished"].as_u64()) else {
                continue;
            };
            let outcome: tiffin::status::Outcome =
                serde_json::from_value(a["outcome"].clone()).expect("an outcome");
            v.insert(format!(
                "{}.json",
                tiffin::publication::report::report_base(fin, g, outcome)
            ));
        }
        v
    }
}

/// The variable naming the stand-in's sandbox root to whoever runs the agent.
pub const STANDIN_ROOT: &str = "TIFFIN_STANDIN_ROOT";

/// The host's flake.nix on the stand-in: every tree is a system of its own (the configuration
/// names the flake's source, as the fake NixOS hashes the whole tree), and `marker` finds the
/// trees Nix copied into its store.
fn tree_flake_nix(marker: &str) -> String {
    format!(
        r#"# {marker}
{{
  inputs.nixpkgs.url = "path:{standin}";
  outputs = {{ self, nixpkgs }}: {{
    nixosConfigurations.{HOST} = nixpkgs.lib.nixosSystem {{
      system = "{system}";
      modules = [ ./configuration.nix {{ standin.tree = "${{self}}"; }} ];
    }};
  }};
}}
"#,
        standin = crate::real_nix::standin_dir().display(),
        system = crate::real_nix::nix_system(),
    )
}

pub fn read_manifest(gen_dir: &Path) -> Manifest {
    let p = gen_dir.join("manifest.json");
    let b = fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    Manifest::parse(&b, &p.display().to_string()).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// How `dir` differs from what `m` describes: missing, extra or changed files and directories.
/// `build_view`: the agent hands Nix the tree without `files/` and `files.toml`.
pub fn tree_differences(dir: &Path, m: &Manifest, build_view: bool) -> Vec<String> {
    let skip =
        |p: &str| build_view && (p == "files" || p.starts_with("files/") || p == "files.toml");
    let mut problems = Vec::new();
    let mut expected = BTreeSet::new();
    for e in m.entries.iter().filter(|e| !skip(&e.path)) {
        expected.insert(e.path.clone());
        let p = dir.join(&e.path);
        match e.kind {
            EntryKind::Dir if !p.is_dir() => problems.push(format!("{}: no directory", e.path)),
            EntryKind::Dir => {}
            EntryKind::File => match hash::sha256_file(&p) {
                Ok((h, n)) if Some(&h) == e.sha256.as_ref() && Some(n) == e.size => {}
                Ok(_) => problems.push(format!("{}: other content", e.path)),
                Err(err) => problems.push(format!("{}: {err}", e.path)),
            },
        }
    }
    for rel in walk_names(dir, Path::new("")) {
        if !expected.contains(&rel) {
            problems.push(format!("{rel}: not in the manifest"));
        }
    }
    problems
}

fn walk_names(root: &Path, rel: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(root.join(rel)).into_iter().flatten().flatten() {
        let r = rel.join(e.file_name());
        out.push(r.to_string_lossy().into_owned());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk_names(root, &r));
        }
    }
    out
}

pub fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A small tmpfs mounted at `at` (root only), unmounted on drop.
pub struct Tmpfs {
    pub at: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `options` (e.g. `size=64k,mode=0700,uid=…`) at `at`. `None` (after
    /// printing why) when this machine cannot mount, outside CI; under CI=true that panics.
    pub fn mount(at: &Path, options: &str) -> Option<Self> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(at)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Self {
                at: at.to_path_buf(),
            }),
            other => {
                let why = format!("cannot mount a tmpfs at {}: {other:?}", at.display());
                crate::support::prerequisite("tmpfs", Some(why));
                None
            }
        }
    }

    /// Free bytes as the filesystem reports them.
    pub fn free(&self) -> u64 {
        let st = nix::sys::statvfs::statvfs(&self.at).expect("statvfs");
        st.blocks_available() as u64 * st.fragment_size() as u64
    }

    /// Fills the filesystem with `filler` until at most `leave` bytes are free.
    pub fn fill(&self, filler: &Path, leave: u64) {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(filler)
            .expect("open the filler");
        let chunk = vec![0x5au8; 4096];
        while self.free() > leave {
            if f.write_all(&chunk).and_then(|()| f.flush()).is_err() {
                break;
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.at).status();
    }
}
