//! Hashing a 2,000-file / 20 MB tree into a manifest: prints a table, asserts nothing.
//! Run with `make bench` (release build).

use std::time::Instant;
use tiffin::manifest::{entries_of, walk_tree, Manifest};

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("tree");
    let files = 2_000usize;
    let size = 10 * 1024usize;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..files {
        let sub = root.join(format!("d{:02}", i % 40));
        std::fs::create_dir_all(&sub).expect("mkdir");
        let mut body = vec![0u8; size];
        for b in body.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        std::fs::write(sub.join(format!("f{i:04}.nix")), body).expect("write");
    }
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let walked = walk_tree(&root, dir.path()).expect("walk");
        let m = Manifest::new(
            "bench",
            1,
            "2026-01-01T00:00:00Z".into(),
            entries_of(&walked),
        );
        bytes = m.to_bytes().len();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let mb = (files * size) as f64 / 1e6;
    println!("| what | files | MB | manifest bytes | min s | median s | max s | MB/s (median) |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| walk + sha256 + manifest | {files} | {mb:.1} | {bytes} | {:.3} | {:.3} | {:.3} | {:.0} |",
        times[0],
        times[2],
        times[4],
        mb / times[2]
    );
}
