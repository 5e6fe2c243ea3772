//! The pipeline through the real sshd on real Nix: `tiffin agent --once` fetches a flake host's
//! generation over SFTP (its chroot made by `tiffin fleet publish`), builds the NixOS stand-in
//! with real `nix build`, sets the real profile, verifies by logging in again and uploads its
//! report through SFTP; a system whose activation locks the host out of sshd is rolled back.
//!
//! Needs root, `/usr/sbin/sshd` and real Nix (fails under `CI=true` without them, skips otherwise).

use crate::support;

use crate::real_nix;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::process::Command;
use support::sshd::Sshd;

const HOST: &str = "laptop";

fn run(c: &mut Command) -> String {
    let out = c.envs(real_nix::env()).output().expect("run");
    assert!(out.status.success(), "{c:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_flake_host_updates_over_sftp_on_real_nix_and_a_cut_off_system_is_rolled_back() {
    let test = "a_flake_host_updates_over_sftp_on_real_nix_and_a_cut_off_system_is_rolled_back";
    if !real_nix::available(test) {
        return;
    }
    let Some(srv) = Sshd::start(&[HOST]) else {
        return;
    };
    let dir = tempfile::Builder::new()
        .prefix("tiffin-sshd-realnix-")
        .tempdir()
        .unwrap();
    let root = dir.path().join("nixos");
    let state = dir.path().join("state");
    let files_root = dir.path().join("fsroot");
    for d in [root.join("run"), root.join("profiles"), files_root.clone()] {
        fs::create_dir_all(d).unwrap();
    }
    let repo = srv.fleet().host_dir(HOST);
    fs::write(repo.join("flake.nix"), real_nix::flake_nix(HOST)).unwrap();
    let config = |extra: &str| format!("{{ networking.hostName = \"{HOST}\";{extra} }}\n");
    fs::write(repo.join("configuration.nix"), config("")).unwrap();

    // The machine before tiffin: the classic build of the same configuration, profile generation 1.
    let first = dir.path().join("first/configuration.nix");
    fs::create_dir_all(first.parent().unwrap()).unwrap();
    fs::write(&first, config("")).unwrap();
    let initial = real_nix::build_classic(&first);
    run(Command::new("nix-env")
        .arg("-p")
        .arg(root.join("profiles/system"))
        .arg("--set")
        .arg(&initial));
    for l in ["run/current-system", "run/booted-system", "boot-default"] {
        symlink(&initial, root.join(l)).unwrap();
    }
    let h = srv.host(HOST);
    let config_path = dir.path().join("agent.toml");
    fs::write(
        &config_path,
        format!(
            r#"host = "{HOST}"
source = "sftp://{user}@127.0.0.1:{port}/"
identity = "{identity}"
known_hosts = "{known_hosts}"
trusted_key = "{trusted}"
state_dir = "{state}"
socket = "{state}/agent.sock"
http_trigger = ""
verify_timeout = "3s"

[system]
nix = "nix"
nix_build = "nix-build"
nix_env = "nix-env"
systemd_run = ""
profile = "{root}/profiles/system"
current_system = "{root}/run/current-system"
booted_system = "{root}/run/booted-system"
files_root = "{files_root}"
"#,
            user = h.user,
            port = srv.port(),
            identity = h.identity.display(),
            known_hosts = srv.known_hosts_for(srv.port()).display(),
            trusted = srv.fleet().public_key().display(),
            state = state.display(),
            root = root.display(),
            files_root = files_root.display(),
        ),
    )
    .unwrap();
    let once = || {
        let out = Command::new(env!("CARGO_BIN_EXE_tiffin"))
            .args(["agent", "--once", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "warn")
            .env("TIFFIN_STANDIN_ROOT", &root)
            .envs(real_nix::env())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let current = || fs::canonicalize(root.join("run/current-system")).unwrap();
    let profile = || fs::canonicalize(root.join("profiles/system")).unwrap();
    let reports = || -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(h.dir.join("logs"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json") && n != "seen.json")
            .collect();
        v.sort();
        v
    };

    fs::write(
        repo.join("configuration.nix"),
        config(" standin.kernel = \"6.9\";"),
    )
    .unwrap();
    let g = srv.publish_repo(HOST);
    let (code, out) = once();
    assert_eq!(code, 0, "{out}");
    let updated: PathBuf = current();
    assert_ne!(updated, initial);
    assert!(updated.starts_with("/nix/store"), "{}", updated.display());
    assert_eq!(profile(), updated);
    assert!(root.join("profiles/system-2-link").exists());
    assert!(
        reports()
            .iter()
            .any(|n| n.ends_with(&format!("-g{g}-updated.json"))),
        "{:?}",
        reports()
    );

    // A system whose activation locks the host out of the server: verification fails over
    // the real sshd, and the machine goes back to the updated system.
    let script = srv.write_cut_script(HOST);
    fs::write(
        root.join("cut-sshd-hook"),
        format!("{}\n", script.display()),
    )
    .unwrap();
    fs::write(
        repo.join("configuration.nix"),
        config(" standin.kernel = \"6.9\"; standin.cutSshd = true;"),
    )
    .unwrap();
    let g = srv.publish_repo(HOST);
    let (code, out) = once();
    assert_eq!(code, 3, "{out}");
    assert_eq!(current(), updated);
    assert_eq!(profile(), updated);
    assert!(
        reports()
            .iter()
            .any(|n| n.ends_with(&format!("-g{g}-rolled_back.json"))),
        "{:?}",
        reports()
    );
}
