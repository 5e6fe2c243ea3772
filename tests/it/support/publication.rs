//! Publications made by the library's `tiffin fleet publish`: the harness keeps a fleet
//! repository (fleet.toml naming each host's key and system user, `chroot` = the server's chroot
//! root, `hosts/<name>/…`) and publishes it with [`tiffin::fleet::publish_host`], so what sshd
//! serves is exactly what the admin's command writes (layout, modes, root:<host group>
//! ownership, `logs/` owned by the host's user). Tests that tamper with a chroot do so after
//! publishing, with [`write_manifest`] and [`set_owner_mode`].

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tiffin::config::FleetConfig;
use tiffin::fleet::{publish_host, HostResult, Publication, PublishOptions};
use tiffin::manifest::Manifest;

/// One host of the harness's fleet.toml.
pub struct FleetHost<'a> {
    pub name: &'a str,
    /// Its system user on the server.
    pub user: &'a str,
    /// Its `ssh-ed25519 AAAA…` public key.
    pub key: &'a str,
}

/// The admin's fleet repository of a test server.
pub struct FleetRepo {
    pub dir: PathBuf,
    pub config: FleetConfig,
}

impl FleetRepo {
    /// Writes `dir/fleet.toml` and an empty `dir/hosts/<name>/` per host. Old generations are
    /// kept (tests delete the ones they want gone).
    pub fn create(dir: &Path, chroot: &Path, hosts: &[FleetHost]) -> FleetRepo {
        let mut text = format!(
            "chroot = {:?}\nserver = \"127.0.0.1\"\nkeep_generations = 1000\n",
            chroot.display().to_string()
        );
        for h in hosts {
            text.push_str(&format!(
                "\n[hosts.{}]\nkey = {:?}\nuser = {:?}\n",
                h.name, h.key, h.user
            ));
            let hd = dir.join("hosts").join(h.name);
            fs::create_dir_all(&hd).unwrap_or_else(|e| panic!("mkdir {}: {e}", hd.display()));
        }
        let path = dir.join("fleet.toml");
        fs::write(&path, &text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        // Publications are signed by default: the fleet's key, where `fleet init` puts it.
        let key = dir.join(tiffin::config::fleet::DEFAULT_SIGNING_KEY);
        tiffin::sign::SecretKey::generate()
            .and_then(|k| k.save(&key, "test fleet", true))
            .unwrap_or_else(|e| panic!("the test fleet's signing key: {e}"));
        let config = FleetConfig::load(dir).unwrap_or_else(|e| panic!("{e}\n{text}"));
        FleetRepo {
            dir: dir.to_path_buf(),
            config,
        }
    }

    /// The fleet's public signing key (what agents name as `trusted_key`).
    pub fn public_key(&self) -> PathBuf {
        tiffin::sign::public_path_for(&self.dir.join(tiffin::config::fleet::DEFAULT_SIGNING_KEY))
    }

    /// The fleet's secret signing key (tests that tamper with a manifest sign it again).
    pub fn secret_key(&self) -> tiffin::sign::SecretKey {
        tiffin::sign::SecretKey::load(&self.dir.join(tiffin::config::fleet::DEFAULT_SIGNING_KEY))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `hosts/<name>/`: the host's tree in the repository.
    pub fn host_dir(&self, host: &str) -> PathBuf {
        self.dir.join("hosts").join(host)
    }

    /// Replaces the host's tree in the repository by a copy of `src`.
    pub fn set_tree(&self, host: &str, src: &Path) {
        let hd = self.host_dir(host);
        fs::remove_dir_all(&hd).unwrap_or_else(|e| panic!("rm -r {}: {e}", hd.display()));
        copy_tree(src, &hd);
    }

    /// Runs `tiffin fleet publish HOST` (the library's) and returns the live generation, which
    /// is new unless the tree did not change. Panics with publish's error when it fails.
    pub fn publish(&self, host: &str) -> u64 {
        let r = publish_host(&self.dir, &self.config, host, &PublishOptions::default())
            .unwrap_or_else(|e| panic!("fleet publish {host}: {e}"));
        match r.result {
            HostResult::Published { generation, .. } | HostResult::Unchanged { generation } => {
                generation
            }
            other => panic!("fleet publish {host}: {other:?}"),
        }
    }

    /// The manifest `current` names for `host`.
    pub fn current_manifest(&self, host: &str) -> Manifest {
        Publication::new(&self.config.chroot, host)
            .current_manifest()
            .unwrap_or_else(|e| panic!("{host}'s publication: {e}"))
            .unwrap_or_else(|| panic!("nothing is published for {host}"))
    }
}

/// Copies a plain tree (directories and files, modes kept) to a new directory `to`.
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap_or_else(|e| panic!("mkdir {}: {e}", to.display()));
    let rd = fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
    for item in rd {
        let item = item.unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
        let (src, dst) = (item.path(), to.join(item.file_name()));
        let ft = item
            .file_type()
            .unwrap_or_else(|e| panic!("stat {}: {e}", src.display()));
        if ft.is_dir() {
            copy_tree(&src, &dst);
        } else {
            fs::copy(&src, &dst)
                .unwrap_or_else(|e| panic!("copy {} to {}: {e}", src.display(), dst.display()));
        }
    }
}

/// Writes `gens/<N>/manifest.json` (for tests that tamper with a publication).
pub fn write_manifest(gen_dir: &Path, manifest: &Manifest, gid: u32) {
    let p = gen_dir.join("manifest.json");
    fs::write(&p, manifest.to_bytes()).expect("write manifest.json");
    set_owner_mode(&p, 0o640, gid);
}

/// root:<gid> with `mode`.
pub fn set_owner_mode(p: &Path, mode: u32, gid: u32) {
    std::os::unix::fs::chown(p, Some(0), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

/// A source tree of `files` text files (about `size` bytes each) in a few directories, the way a
/// host's configuration looks. `seed` changes every file's content.
pub fn write_config_tree(dir: &Path, files: usize, size: usize, seed: u64) {
    fs::create_dir_all(dir.join("common")).expect("mkdir common");
    fs::create_dir_all(dir.join("modules/services")).expect("mkdir modules");
    fs::write(
        dir.join("configuration.nix"),
        "{ imports = [ ./common ]; }\n",
    )
    .expect("write configuration.nix");
    for i in 1..files {
        let sub = match i % 3 {
            0 => "common",
            1 => "modules",
            _ => "modules/services",
        };
        fs::write(
            dir.join(format!("{sub}/m{i:04}.nix")),
            module_text(i as u64, size, seed),
        )
        .expect("write a module");
    }
}

/// Deterministic, not very compressible Nix-like text.
pub fn module_text(i: u64, size: usize, seed: u64) -> String {
    let mut s = format!("# module {i}\n{{ config, lib, ... }}:\n{{\n");
    let mut x =
        i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ 1;
    while s.len() < size {
        // xorshift: a different value on every line.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(&format!(
            "  services.s{:x}.option = \"{:016x}\";\n",
            x & 0xfff,
            x
        ));
    }
    s.push_str("}\n");
    s
}
