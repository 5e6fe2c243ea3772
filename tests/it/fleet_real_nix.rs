//! `tiffin fleet build`, `publish --build` and `fleet diff` on real Nix and the NixOS stand-in
//! (assets/nixos-standin): what Nix sees of a host's tree, the command lines Nix 2.4+ accepts,
//! and a real `nix store diff-closures`.

use crate::fleet_support as support;
use crate::real_nix;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use support::*;

fn tiffin(args: &[&str], fleet: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tiffin"))
        .args(args)
        .arg("--fleet")
        .arg(fleet)
        .envs(real_nix::env())
        .output()
        .expect("run tiffin")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A fleet with a flake host `web` and a classic host `plain` on the stand-in, each with a
/// `files/` secret and a `files.toml` holding `marker`.
fn standin_fleet(marker: &str) -> TestFleet {
    let f = TestFleet::new();
    f.write_config(&[("web", ""), ("plain", "")], "");
    f.write("hosts/web/flake.nix", &real_nix::flake_nix("web"));
    f.write(
        "hosts/web/configuration.nix",
        "{ imports = [ ./hardware.nix ]; networking.hostName = \"web\"; }\n",
    );
    f.write("hosts/web/hardware.nix", "{ standin.kernel = \"6.1\"; }\n");
    f.write(
        "hosts/plain/configuration.nix",
        "{ networking.hostName = \"plain\"; }\n",
    );
    for h in ["web", "plain"] {
        f.write(
            &format!("hosts/{h}/files/etc/secret"),
            &format!("{marker}\n"),
        );
        f.write(
            &format!("hosts/{h}/files.toml"),
            &format!("# {marker}\n[\"/etc/secret\"]\nmode = \"0600\"\n"),
        );
    }
    f
}

#[test]
fn fleet_build_of_a_flake_host_copies_nothing_of_files_into_the_nix_store() {
    if !real_nix::available(
        "fleet_build_of_a_flake_host_copies_nothing_of_files_into_the_nix_store",
    ) {
        return;
    }
    let marker = real_nix::unique_marker("secret");
    let f = standin_fleet(&marker);
    let o = tiffin(&["fleet", "build"], &f.repo());
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    for h in ["web", "plain"] {
        assert!(
            out.lines().any(|l| l.starts_with(h)
                && l.contains("built")
                && l.contains("/nix/store/")
                && l.contains(&format!("-nixos-system-{h}"))),
            "{out}"
        );
    }
    assert_eq!(
        real_nix::store_paths_containing(&marker),
        Vec::<String>::new(),
        "`fleet build` put the host's files/ or files.toml into the world-readable store"
    );

    // publish --build: the same view, and the built system is the manifest's expected one.
    let o = tiffin(&["fleet", "publish", "--build", "web"], &f.repo());
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    let m = verify_generation(&f.host_pub("web").join("gens/1")).unwrap();
    let sys = m
        .expected_system
        .expect("publish --build records the system");
    assert!(
        Path::new(&sys)
            .join("bin/switch-to-configuration")
            .is_file(),
        "{sys}"
    );
    assert!(m.entries.iter().any(|e| e.path == "files/etc/secret"));
    assert_eq!(
        real_nix::store_paths_containing(&marker),
        Vec::<String>::new()
    );
}

#[test]
fn a_real_evaluation_error_is_reported_with_its_file_and_line() {
    if !real_nix::available("a_real_evaluation_error_is_reported_with_its_file_and_line") {
        return;
    }
    let f = TestFleet::new();
    f.write_config(&[("web", "")], "");
    f.write("hosts/web/flake.nix", &real_nix::flake_nix("web"));
    f.write(
        "hosts/web/configuration.nix",
        "{\n  networking.hostName = \"web\";\n  services.x = undefinedThing;\n}\n",
    );
    let o = tiffin(&["fleet", "build"], &f.repo());
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert!(err.contains("undefined variable 'undefinedThing'"), "{err}");
    assert!(
        err.contains(
            "host web: build failed: undefined variable 'undefinedThing' (configuration.nix:3:"
        ),
        "{err}"
    );
    assert!(
        err.contains("services.x = undefinedThing;") && err.contains('^'),
        "{err}"
    );
}

#[test]
fn fleet_diff_runs_the_real_diff_closures_and_names_both_kernels() {
    if !real_nix::available("fleet_diff_runs_the_real_diff_closures_and_names_both_kernels") {
        return;
    }
    let f = TestFleet::new();
    f.write_config(&[("web", "")], "");
    let tag = real_nix::unique_marker("diff");
    let old = f.tmp.path().join("old/configuration.nix");
    fs::create_dir_all(old.parent().unwrap()).unwrap();
    fs::write(
        &old,
        format!(
            "{{ networking.hostName = \"web\"; standin.kernel = \"6.1\"; tag = \"{tag}\"; }}\n"
        ),
    )
    .unwrap();
    let running = real_nix::build_classic(&old);
    f.write(
        "hosts/web/configuration.nix",
        &format!(
            "{{ networking.hostName = \"web\"; standin.kernel = \"6.6\"; tag = \"{tag}\"; }}\n"
        ),
    );
    let o = tiffin(&["fleet", "publish", "--build"], &f.repo());
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    // What the agent would have uploaded: the system it runs.
    let logs = f.host_pub("web").join("logs");
    let now = tiffin::status::unix_now();
    let seen = tiffin::publication::report::Seen {
        host: "web".into(),
        last_seen: tiffin::publication::report::rfc3339(now),
        applied_generation: Some(1),
        running_system: Some(running.display().to_string()),
        booted_system: Some(running.display().to_string()),
        agent_version: tiffin::VERSION.into(),
        interval_secs: None,
        updating_to: None,
        reboot_needed: None,
        tiffin_system: None,
        rolled_back_to: None,
    };
    fs::write(
        logs.join("seen.json"),
        serde_json::to_string(&seen).unwrap(),
    )
    .unwrap();
    // No nvd: the real `nix store diff-closures`, with no experimental feature in NIX_CONFIG.
    let o = Command::new(env!("CARGO_BIN_EXE_tiffin"))
        .args(["fleet", "--fleet"])
        .arg(f.repo())
        .args(["diff", "web"])
        .envs(real_nix::env())
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(out.contains("linux: 6.1 → 6.6"), "{out}\n{err}");
}
