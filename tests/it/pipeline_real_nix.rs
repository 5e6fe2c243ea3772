//! The agent's pipeline on real Nix: the NixOS stand-in (assets/nixos-standin) evaluated and
//! built by real `nix build` (flake) and `nix-build` (classic), a real system profile, real store
//! paths held as GC roots, and Nix's own evaluation errors. Only activation is simulated.

use crate::pipeline_support;

use crate::real_nix;
use pipeline_support::{Machine, HOST};
use std::path::Path;
use std::process::Command;

#[test]
fn flake_and_classic_hosts_update_and_roll_back_on_real_nix_with_a_real_profile() {
    for flake in [true, false] {
        let test = "flake_and_classic_hosts_update_and_roll_back_on_real_nix_with_a_real_profile";
        let Some(mut m) = Machine::on_real_nix(test, flake, "") else {
            return;
        };
        let kind = if flake { "flake" } else { "classic" };
        m.write(
            "configuration.nix",
            &format!("{{ imports = [ ./kernel.nix ]; networking.hostName = \"{HOST}\"; }}\n"),
        );
        m.write("kernel.nix", "{ standin.kernel = \"6.6\"; }\n");
        let g = m.publish();
        let (code, out) = m.run_once_verbose();
        assert_eq!(code, 0, "{kind}: {out}");
        // At start the agent says which Nix it found, against the floor.
        assert!(
            out.contains("nix (Nix) ") && out.contains("tiffin needs Nix 2.4 or later"),
            "{out}"
        );
        let new = m.current();
        assert_ne!(new, m.initial_system, "{kind}");
        assert!(new.starts_with("/nix/store/"), "{kind}: {}", new.display());
        assert!(
            new.to_string_lossy()
                .ends_with(&format!("-nixos-system-{HOST}")),
            "{}",
            new.display()
        );
        assert_eq!(m.profile(), new, "{kind}");
        assert_eq!(m.boot_default(), new, "{kind}");
        assert_eq!(
            m.profile_generations(),
            2,
            "{kind}: a real nix-env generation"
        );
        let (report, _) = m.report(g, "updated");
        // The kernel is a store path of its own: a real link difference means "reboot needed".
        assert_eq!(report["reboot_needed"], true, "{kind}: {report}");
        assert!(
            Path::new(&new)
                .join("kernel")
                .canonicalize()
                .unwrap()
                .starts_with("/nix/store"),
            "{kind}"
        );

        // A failing activation (read from the configuration) rolls back to the running system.
        m.write(
            "kernel.nix",
            "{ standin.kernel = \"6.6\"; standin.failActivate = true; }\n",
        );
        let g = m.publish();
        let (code, out) = m.run_once();
        assert_eq!(code, 3, "{kind}: {out}");
        assert_eq!(m.current(), new, "{kind}");
        assert_eq!(m.profile(), new, "{kind}");
        let (report, _) = m.report(g, "rolled_back");
        assert_eq!(report["failed_step"], "activate", "{kind}: {report}");
        assert!(
            !m.state
                .join(tiffin::agent::pipeline::build::gcroot::RESULT_LINK)
                .exists(),
            "{kind}: the build's GC root outlived the cycle"
        );
    }
}

#[test]
fn the_built_system_survives_the_garbage_collector_during_verification() {
    let test = "the_built_system_survives_the_garbage_collector_during_verification";
    let Some(probe) = Machine::on_real_nix(test, false, "") else {
        return;
    };
    drop(probe);
    // The health check collects the system being verified (only that path: a whole
    // `nix-collect-garbage` would also take other tests' unrooted builds).
    let out_file = "gc.out";
    let check = format!(
        "sh -c 'nix-store --delete \"$(readlink -f \"$TIFFIN_STANDIN_ROOT/run/current-system\")\" > \"$TIFFIN_STANDIN_ROOT/{out_file}\" 2>&1; exit 0'"
    );
    let extra = format!("health_checks = [{check:?}]");
    let mut m = Machine::on_real_nix(test, false, &extra).unwrap();
    let tag = real_nix::unique_marker("gc");
    m.write(
        "configuration.nix",
        &format!("{{ networking.hostName = \"{HOST}\"; tag = \"{tag}\"; }}\n"),
    );
    let g = m.publish();
    let (code, out) = m.run_once();
    let gc = std::fs::read_to_string(m.root.join(out_file)).unwrap_or_default();
    assert_eq!(code, 0, "{out}\ncollector: {gc}");
    assert!(gc.contains("still alive"), "the collector ran: {gc}");
    let new = m.current();
    assert!(new.join("bin/switch-to-configuration").is_file());
    assert_eq!(m.profile(), new);
    m.report(g, "updated");
    // Committed: the profile holds the system now, and the build's root is gone.
    assert!(!m
        .state
        .join(tiffin::agent::pipeline::build::gcroot::RESULT_LINK)
        .exists());
}

#[test]
fn a_nix_evaluation_error_is_reported_with_its_file_line_and_caret() {
    let test = "a_nix_evaluation_error_is_reported_with_its_file_line_and_caret";
    for flake in [true, false] {
        let Some(mut m) = Machine::on_real_nix(test, flake, "") else {
            return;
        };
        m.write(
            "configuration.nix",
            "{\n  networking.hostName = \"laptop\";\n  services.x = undefinedThing;\n}\n",
        );
        let g = m.publish();
        let (code, out) = m.run_once();
        assert_eq!(code, 1, "{out}");
        let (report, _) = m.report(g, "failed");
        let msg = report["message"].as_str().unwrap();
        assert_eq!(report["failed_step"], "build");
        assert!(msg.contains("undefined variable 'undefinedThing'"), "{msg}");
        // The first line, which the tray, `fleet status` and `fleet logs` show, says where.
        let first = msg.lines().next().unwrap();
        assert!(
            first.starts_with("undefined variable 'undefinedThing' (")
                && first.contains("configuration.nix:3:"),
            "{msg}"
        );
        assert!(msg.contains("services.x = undefinedThing;"), "{msg}");
        assert!(msg.contains('^'), "{msg}");
        assert_eq!(m.current(), m.initial_system);
        // `tiffin fleet logs` on the server shows the same first line.
        let fleet = m.dir.path().join("fleet");
        std::fs::create_dir_all(&fleet).unwrap();
        std::fs::write(
            fleet.join("fleet.toml"),
            format!(
                "chroot = {:?}\n\n[hosts.{HOST}]\nkey = \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOhfranTNzd5iz9u62K9DBWkqC9JBYkSle3Nr25o6PSa root@laptop\"\n",
                m.publication.parent().unwrap().display().to_string()
            ),
        )
        .unwrap();
        let logs = Command::new(env!("CARGO_BIN_EXE_tiffin"))
            .args(["fleet", "--fleet"])
            .arg(&fleet)
            .args(["logs", HOST])
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&logs.stdout);
        assert!(
            shown.contains(first) && shown.contains("services.x = undefinedThing;"),
            "{shown}"
        );
    }
}

/// `fleet publish --build` on real Nix into the machine's publication, then the machine's cycle.
fn publish_built(m: &Machine, fleet: &Path) -> String {
    let text = format!(
        "chroot = {:?}\n\n[hosts.{HOST}]\nkey = \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOhfranTNzd5iz9u62K9DBWkqC9JBYkSle3Nr25o6PSa root@laptop\"\n",
        m.publication.parent().unwrap().display().to_string()
    );
    std::fs::write(fleet.join("fleet.toml"), text).unwrap();
    let config = tiffin::config::FleetConfig::load(fleet).unwrap();
    let opts = tiffin::fleet::PublishOptions {
        build: Some(tiffin::fleet::BuildMode::Build),
        keep_owner: true,
        // The machine reads a file:// publication and trusts no key: what is checked here is
        // the system it builds against the manifest's.
        unsigned: true,
        ..tiffin::fleet::PublishOptions::default()
    };
    let r = tiffin::fleet::publish(fleet, &config, &opts).unwrap();
    assert!(!r.hosts[0].failed(), "{:?}", r.hosts[0].result);
    r.hosts[0]
        .expected_system
        .clone()
        .expect("publish --build records the system")
}

#[test]
fn after_publish_build_the_machine_runs_exactly_the_expected_system_and_logs_a_mismatch() {
    let test =
        "after_publish_build_the_machine_runs_exactly_the_expected_system_and_logs_a_mismatch";
    // Builds here: the mismatch is a local build's (with `auto` the publication's cache would
    // give exactly the expected system; tests/it/prebuilt_cache.rs shows that).
    let Some(m) = Machine::on_real_nix(test, true, "build = \"local\"") else {
        return;
    };
    let fleet = m.dir.path().join("fleet");
    let host_dir = fleet.join("hosts").join(HOST);
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(host_dir.join("flake.nix"), real_nix::flake_nix(HOST)).unwrap();
    std::fs::write(
        host_dir.join("configuration.nix"),
        format!("{{ networking.hostName = \"{HOST}\"; standin.kernel = \"6.7\"; }}\n"),
    )
    .unwrap();
    let expected = publish_built(&m, &fleet);
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    assert_eq!(m.current(), Path::new(&expected), "{out}");
    let (_, log) = m.report(1, "updated");
    assert!(!log.contains("the publication expected"), "{log}");

    // A publication that expects another system than the machine builds: the log says both.
    std::fs::write(
        host_dir.join("configuration.nix"),
        format!("{{ networking.hostName = \"{HOST}\"; standin.kernel = \"6.8\"; }}\n"),
    )
    .unwrap();
    publish_built(&m, &fleet);
    let mpath = m.publication.join("gens/2/manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    manifest["expected_system"] = serde_json::Value::String(expected.clone());
    // Its cache is the closure of the system it was built for: gone with that system.
    manifest.as_object_mut().unwrap().remove("cache");
    std::fs::write(&mpath, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    let (report, log) = m.report(2, "updated");
    let built = m.current().display().to_string();
    let said = format!("the publication expected {expected}; this machine built {built}");
    assert!(log.contains(&said), "{log}");
    // The report's message says it too (what `fleet logs` and `tiffin status` show).
    let message = report["message"].as_str().unwrap_or_default();
    assert!(message.contains(&said), "{report}");
}

#[test]
fn the_standin_knobs_fail_the_build_say_no_space_and_fail_the_boot_entry() {
    let test = "the_standin_knobs_fail_the_build_say_no_space_and_fail_the_boot_entry";
    let Some(mut m) = Machine::on_real_nix(test, false, "") else {
        return;
    };
    let with =
        |knob: &str| format!("{{ networking.hostName = \"{HOST}\"; standin.{knob} = true; }}\n");

    m.write("configuration.nix", &with("failBuild"));
    let g = m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 1, "{out}");
    let (report, _) = m.report(g, "failed");
    assert_eq!(report["failed_step"], "build");
    assert!(
        report["message"]
            .as_str()
            .unwrap()
            .contains("standin.failBuild"),
        "{report}"
    );

    m.write("configuration.nix", &with("noSpace"));
    let g = m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 1, "{out}");
    let (report, _) = m.report(g, "failed");
    assert!(
        report["message"]
            .as_str()
            .unwrap()
            .contains("No space left"),
        "{report}"
    );
    assert_eq!(m.current(), m.initial_system);

    m.write("configuration.nix", &with("noSpaceBoot"));
    let g = m.publish();
    let (code, out) = m.run_once();
    assert_eq!(code, 3, "{out}");
    m.report(g, "rolled_back");
    assert_eq!(m.current(), m.initial_system);
    assert_eq!(m.profile(), m.initial_system);
}
