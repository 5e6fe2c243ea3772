//! A stand-in for `tiffin fleet publish` until it is merged: lays out one generation of a host
//! exactly as DESIGN §2 and the sshd contract say (gens/<N>/manifest.json, gens/<N>/tree/…, the
//! `current` link replaced atomically; root-owned, readable by the host's group, never writable).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use tiffin::fsutil;
use tiffin::manifest::{entries_of, walk_tree, EntryKind, Manifest};

/// Publishes `src` as generation `generation` of `host` under `host_dir` (the host's chroot),
/// group-readable by `gid`, and points `current` at it.
pub fn publish(host_dir: &Path, host: &str, generation: u64, src: &Path, gid: u32) -> Manifest {
    let walked = walk_tree(src, src).expect("walk the source tree");
    let published = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let manifest = Manifest::new(host, generation, published, entries_of(&walked));
    let gens = host_dir.join("gens");
    make_dir(&gens, 0o755, 0);
    let gen_dir = gens.join(generation.to_string());
    make_dir(&gen_dir, 0o750, gid);
    let tree = gen_dir.join("tree");
    make_dir(&tree, 0o750, gid);
    for w in &walked {
        let dest = tree.join(&w.entry.path);
        match w.entry.kind {
            EntryKind::Dir => make_dir(&dest, 0o750, gid),
            EntryKind::File => {
                fs::copy(&w.source, &dest).expect("copy a published file");
                set_owner_mode(&dest, 0o640, gid);
            }
        }
    }
    write_manifest(&gen_dir, &manifest, gid);
    fsutil::atomic_symlink(
        Path::new(&format!("gens/{generation}")),
        &host_dir.join("current"),
    )
    .expect("point current at the new generation");
    manifest
}

/// Writes `gens/<N>/manifest.json` (also used by tests that tamper with a publication).
pub fn write_manifest(gen_dir: &Path, manifest: &Manifest, gid: u32) {
    let p = gen_dir.join("manifest.json");
    fs::write(&p, manifest.to_bytes()).expect("write manifest.json");
    set_owner_mode(&p, 0o640, gid);
}

fn make_dir(p: &Path, mode: u32, gid: u32) {
    if !p.is_dir() {
        fs::create_dir(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    }
    set_owner_mode(p, mode, gid);
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
