use super::*;

// Two throw-away keys made with `ssh-keygen -t ed25519 -N ''` for these tests only.
const A_SECRET: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACAfYOWx+K2mG2UNQ/eDUcZPLADsONCjECLCx1DMq6cDLAAAAIiKTPSOikz0
jgAAAAtzc2gtZWQyNTUxOQAAACAfYOWx+K2mG2UNQ/eDUcZPLADsONCjECLCx1DMq6cDLA
AAAEDx6+seWVSplgNDrPyUpWx0uDpADtoBj+CT9AE6k1KQHx9g5bH4raYbZQ1D94NRxk8s
AOw40KMQIsLHUMyrpwMsAAAABWhvc3Rh
-----END OPENSSH PRIVATE KEY-----\n";
const A_PUBLIC: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB9g5bH4raYbZQ1D94NRxk8sAOw40KMQIsLHUMyrpwMs hosta";
const B_SECRET: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACClPLpIK5PeAHeVGSz8wgzdc1nCOIxRTBwxHb2tRwf97QAAAIi2EbfXthG3
1wAAAAtzc2gtZWQyNTUxOQAAACClPLpIK5PeAHeVGSz8wgzdc1nCOIxRTBwxHb2tRwf97Q
AAAECwFteIhch+nsAeh2M79eoZveyMDY7honbtl9afhauJI6U8ukgrk94Ad5UZLPzCDN1z
WcI4jFFMHDEdva1HB/3tAAAABWhvc3Ri
-----END OPENSSH PRIVATE KEY-----\n";
const B_PUBLIC: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKU8ukgrk94Ad5UZLPzCDN1zWcI4jFFMHDEdva1HB/3t hostb";

fn identity(dir: &Path, name: &str, secret: &str) -> Identity {
    let p = dir.join(name);
    std::fs::write(&p, secret).unwrap();
    Identity::load(&p).unwrap()
}

#[test]
fn a_file_sealed_to_host_a_opens_with_as_key_and_not_with_bs() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (
        identity(t.path(), "a", A_SECRET),
        identity(t.path(), "b", B_SECRET),
    );
    let to_a = Recipients::new(A_PUBLIC, &[]).unwrap();
    let sealed = seal(b"password=hunter2\n", &to_a).unwrap();
    assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
    assert_eq!(&open(&sealed, &a).unwrap()[..], b"password=hunter2\n");
    let e = open(&sealed, &b).unwrap_err();
    assert!(e.contains("not sealed to this machine's key"), "{e}");
    // Sealing is not deterministic: the publisher keeps ciphertext to avoid new generations.
    assert_ne!(seal(b"password=hunter2\n", &to_a).unwrap(), sealed);
}

#[test]
fn an_extra_recipient_opens_it_too() {
    let t = tempfile::tempdir().unwrap();
    let b = identity(t.path(), "b", B_SECRET);
    let to = Recipients::new(A_PUBLIC, &[B_PUBLIC.to_string()]).unwrap();
    assert_eq!(to.also.len(), 1);
    assert!(to.id().starts_with(&to.to));
    assert_eq!(&open(&seal(b"x", &to).unwrap(), &b).unwrap()[..], b"x");
}

#[test]
fn an_altered_or_truncated_sealed_file_does_not_open() {
    let t = tempfile::tempdir().unwrap();
    let a = identity(t.path(), "a", A_SECRET);
    let sealed = seal(&[7u8; 100_000], &Recipients::new(A_PUBLIC, &[]).unwrap()).unwrap();
    let mut flipped = sealed.clone();
    let n = flipped.len() - 10;
    flipped[n] ^= 1;
    for bad in [
        flipped,
        sealed[..sealed.len() - 100].to_vec(),
        b"plain".to_vec(),
    ] {
        assert!(open(&bad, &a).is_err());
    }
}

#[test]
fn fingerprints_are_the_ones_ssh_keygen_prints() {
    // `ssh-keygen -lf a.pub`
    assert_eq!(
        fingerprint(A_PUBLIC).unwrap(),
        "SHA256:qHXvGBALgagZnInPfIx+mjaUPkLN7Tw25u27WU/YH44"
    );
}

#[test]
fn keys_age_cannot_seal_to_are_refused_naming_the_kind() {
    let ecdsa = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEmKSENjQEezOmxkZMy7opKgwFB9nkt5YRrYMjNuG5N87uRgg6CLrbo5wAdT/y6v0mKV0U2w0WZ2YB/++Tpockg= x";
    let e = check_recipient(ecdsa).unwrap_err();
    assert!(e.contains("ecdsa-sha2-nistp256"), "{e}");
    assert!(check_recipient("age1nope").is_err());
}
