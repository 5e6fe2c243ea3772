use super::*;
use proptest::prelude::*;
use std::fs;
use std::os::unix::fs::symlink;

fn sample_tree() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    fs::create_dir_all(r.join("common/modules")).unwrap();
    fs::write(r.join("common/modules/base.nix"), "{ }\n").unwrap();
    fs::create_dir_all(r.join("hosts/a/files/etc")).unwrap();
    fs::write(
        r.join("hosts/a/configuration.nix"),
        "{ imports = [ ./common ]; }\n",
    )
    .unwrap();
    fs::write(r.join("hosts/a/files/etc/secret"), "s3cret\n").unwrap();
    symlink("../../common", r.join("hosts/a/common")).unwrap();
    d
}

fn manifest_of(root: &Path, boundary: &Path) -> Manifest {
    let walked = walk_tree(root, boundary).unwrap();
    Manifest::new("a", 1, "2026-01-01T00:00:00Z".into(), entries_of(&walked))
}

#[test]
fn two_walks_of_one_tree_give_identical_bytes() {
    let d = sample_tree();
    let host = d.path().join("hosts/a");
    let one = manifest_of(&host, d.path()).to_bytes();
    let two = manifest_of(&host, d.path()).to_bytes();
    assert_eq!(one, two);
    let m = Manifest::parse(&one, "test").unwrap();
    // the symlinked common/ is resolved into real entries
    assert!(m.entry("common/modules/base.nix").is_some());
    assert_eq!(m.entry("common").unwrap().kind, EntryKind::Dir);
}

#[test]
fn tree_hash_ignores_generation_and_time_but_not_content() {
    let d = sample_tree();
    let host = d.path().join("hosts/a");
    let a = manifest_of(&host, d.path());
    let walked = walk_tree(&host, d.path()).unwrap();
    let b = Manifest::new("a", 7, "2030-01-01T00:00:00Z".into(), entries_of(&walked));
    assert_eq!(a.tree_hash, b.tree_hash);
    fs::write(d.path().join("common/modules/base.nix"), "{ x = 1; }\n").unwrap();
    let c = manifest_of(&host, d.path());
    assert_ne!(a.tree_hash, c.tree_hash);
}

#[test]
fn symlink_leaving_the_boundary_is_named() {
    let d = sample_tree();
    let outside = tempfile::tempdir().unwrap();
    symlink(outside.path(), d.path().join("hosts/a/evil")).unwrap();
    let err = walk_tree(&d.path().join("hosts/a"), d.path()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, WalkError::Escape { .. }), "{msg}");
    assert!(msg.contains("hosts/a/evil"), "{msg}");
}

#[test]
fn dangling_symlink_is_named() {
    let d = sample_tree();
    symlink("nowhere", d.path().join("hosts/a/gone")).unwrap();
    let err = walk_tree(&d.path().join("hosts/a"), d.path()).unwrap_err();
    assert!(matches!(err, WalkError::Dangling { .. }));
    assert!(err.to_string().contains("hosts/a/gone"), "{err}");
}

#[test]
fn directory_loop_through_symlink_is_named() {
    let d = sample_tree();
    symlink("..", d.path().join("hosts/a/files/up")).unwrap();
    let err = walk_tree(&d.path().join("hosts/a"), d.path()).unwrap_err();
    assert!(matches!(err, WalkError::Loop { .. }), "{err}");
    assert!(err.to_string().contains("files/up"), "{err}");
}

#[test]
fn self_referencing_symlink_is_a_loop() {
    let d = sample_tree();
    symlink("self", d.path().join("hosts/a/self")).unwrap();
    let err = walk_tree(&d.path().join("hosts/a"), d.path()).unwrap_err();
    assert!(matches!(err, WalkError::Loop { .. }), "{err}");
    assert!(err.to_string().contains("hosts/a/self"), "{err}");
}

fn good() -> Manifest {
    let entries = vec![
        Entry::dir("etc", 0o755),
        Entry::file("etc/a", 0o644, 3, hash::sha256_bytes(b"abc")),
    ];
    Manifest::new("h", 1, "2026-01-01T00:00:00Z".into(), entries)
}

/// Serialises a manifest after a change, recomputing the tree hash so only the change is wrong.
fn tampered(f: impl FnOnce(&mut Manifest)) -> Vec<u8> {
    let mut m = good();
    f(&mut m);
    m.tree_hash = tree_hash(&m.entries);
    m.to_bytes()
}

fn parse_err(bytes: &[u8]) -> String {
    Manifest::parse(bytes, "gens/1/manifest.json")
        .unwrap_err()
        .to_string()
}

#[test]
fn good_manifest_round_trips() {
    let m = good();
    assert_eq!(Manifest::parse(&m.to_bytes(), "x").unwrap(), m);
}

#[test]
fn unknown_format_version_is_refused() {
    let e = parse_err(&tampered(|m| m.format = FORMAT_VERSION + 1));
    assert!(
        e.contains(&format!("format {} is not supported", FORMAT_VERSION + 1)),
        "{e}"
    );
    assert!(e.contains("gens/1/manifest.json"), "{e}");
    let e = parse_err(&tampered(|m| m.format = 0));
    assert!(e.contains("format 0 is not supported"), "{e}");
}

#[test]
fn a_format_1_manifest_of_an_older_publisher_is_still_read_but_carries_no_signing_time() {
    // What tiffin wrote before `signed_at`: format 1, no such field.
    let old = tampered(|m| m.format = 1);
    assert!(!String::from_utf8_lossy(&old).contains("signed_at"));
    assert_eq!(Manifest::parse(&old, "x").unwrap().format, 1);
    let e = parse_err(&tampered(|m| {
        m.format = 1;
        m.signed_at = Some("2026-01-01T00:00:00Z".into());
    }));
    assert!(e.contains("signed_at needs manifest format 2"), "{e}");
    let e = parse_err(&tampered(|m| m.signed_at = Some("yesterday".into())));
    assert!(e.contains("signed_at \"yesterday\""), "{e}");
}

#[test]
fn a_format_2_manifest_is_still_read_but_may_not_carry_the_fields_of_format_3() {
    // What tiffin wrote before the cache, sealed files, notes and releases: format 2.
    let old = tampered(|m| m.format = 2);
    assert_eq!(Manifest::parse(&old, "x").unwrap().format, 2);
    let e = parse_err(&tampered(|m| {
        m.format = 2;
        m.note = Some("Adds the office printer".into());
    }));
    assert!(e.contains("note needs manifest format 3"), "{e}");
    let e = parse_err(&tampered(|m| {
        m.format = 2;
        m.release = Some("r1".into());
    }));
    assert!(e.contains("release needs manifest format 3"), "{e}");
    let note = tampered(|m| m.note = Some("Adds the office printer".into()));
    assert!(Manifest::parse(&note, "x").is_ok());
}

#[test]
fn absolute_path_is_refused_with_the_path() {
    let e = parse_err(&tampered(|m| {
        m.entries.insert(0, Entry::dir("/etc", 0o755))
    }));
    assert!(e.contains("\"/etc\"") && e.contains("absolute"), "{e}");
}

#[test]
fn dotdot_is_refused_with_the_path() {
    let e = parse_err(&tampered(|m| {
        m.entries.push(Entry::file(
            "etc/../../x",
            0o644,
            1,
            hash::sha256_bytes(b"x"),
        ))
    }));
    assert!(e.contains("etc/../../x") && e.contains("\"..\""), "{e}");
}

#[test]
fn duplicate_path_is_refused() {
    let e = parse_err(&tampered(|m| {
        let dup = m.entries[1].clone();
        m.entries.push(dup)
    }));
    assert!(e.contains("etc/a") && e.contains("more than once"), "{e}");
}

#[test]
fn malformed_hash_is_refused() {
    let e = parse_err(&tampered(|m| m.entries[1].sha256 = Some("XYZ".into())));
    assert!(e.contains("etc/a") && e.contains("not 64 hex"), "{e}");
}

#[test]
fn huge_size_is_refused() {
    let e = parse_err(&tampered(|m| m.entries[1].size = Some(u64::MAX)));
    assert!(e.contains("etc/a") && e.contains("allowed"), "{e}");
}

#[test]
fn tree_hash_mismatch_is_refused() {
    let mut m = good();
    m.entries[1].size = Some(4);
    let e = parse_err(&m.to_bytes());
    assert!(e.contains("does not match its entries"), "{e}");
}

#[test]
fn unknown_field_is_refused() {
    let mut v: serde_json::Value = serde_json::from_slice(&good().to_bytes()).unwrap();
    v["extra"] = serde_json::json!(1);
    let e = parse_err(&serde_json::to_vec(&v).unwrap());
    assert!(e.contains("unknown field"), "{e}");
}

#[test]
fn child_without_parent_is_refused() {
    let e = parse_err(&tampered(|m| {
        m.entries.remove(0);
    }));
    assert!(e.contains("etc/a") && e.contains("parent"), "{e}");
}

#[test]
fn garbage_is_refused_with_origin() {
    let e = parse_err(b"not json");
    assert!(e.contains("gens/1/manifest.json"), "{e}");
}

fn arb_entries() -> impl Strategy<Value = Vec<Entry>> {
    // Paths from a small alphabet so that the two sides share many of them.
    let file = (
        prop::sample::select(vec!["a", "b", "c", "d/e", "d/f", "g/h/i"]),
        prop::sample::select(vec![0o644u32, 0o600, 0o755]),
        0u8..3,
    );
    prop::collection::vec(file, 0..8).prop_map(|files| {
        let mut by = std::collections::BTreeMap::new();
        for (p, mode, content) in files {
            let mut prefix = String::new();
            for part in p.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(part);
                by.insert(prefix.clone(), Entry::dir(prefix.clone(), 0o755));
            }
            let body = [content];
            by.insert(
                p.to_string(),
                Entry::file(p, mode, 1, hash::sha256_bytes(&body)),
            );
        }
        let mut v: Vec<Entry> = by.into_values().collect();
        sort_entries(&mut v);
        v
    })
}

proptest! {
    #[test]
    fn applying_diff_of_a_to_b_on_a_gives_b(a in arb_entries(), b in arb_entries()) {
        let d = ManifestDiff::between(&a, &b);
        prop_assert_eq!(apply_diff(&a, &d), b.clone());
        prop_assert_eq!(d.is_empty(), a == b);
    }
}
