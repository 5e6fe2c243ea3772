//! Prebuilt systems through each host's own binary cache, on real Nix and a real
//! chrooted sshd: `fleet publish --build` exports the closure of the host's system into its
//! generation; the agent with `build = "prebuilt"` downloads over its own SFTP session only
//! the narinfos and NARs of the paths its store lacks, checks each against the signed manifest,
//! imports them and activates exactly `expected_system`, without evaluating or building.
//!
//! One store serves the "server" and the "machine" here, so a machine whose store lacks the
//! system is made by deleting exactly this test's closure paths from the store after the server
//! built and exported them (`nix-store --delete`): every one of them is unique to the test
//! (a nonce in its packages, its kernel version and its flake's source). Every Nix command the
//! agent runs goes through the logging wrappers of `<root>/bin` (`calls.log`).
//!
//! Needs root, `/usr/sbin/sshd` and real Nix (fails under `CI=true` without them).

use crate::faults_support::{read_manifest, SshMachine};
use crate::real_nix;
use crate::support::relay::Relay;
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;
use tiffin::fleet::nix_build::BuildMode;
use tiffin::fleet::publish::{publish_host, HostResult, PublishOptions};
use tiffin::manifest::cache::{CacheIndex, CachePath};
use tiffin::manifest::Manifest;

/// The host's configuration: the stand-in with `packages` (name, version) of `bytes` each, and
/// a kernel of its own.
fn configuration(nonce: &str, packages: &[(&str, &str)], bytes: u64) -> String {
    let pkgs: String = packages
        .iter()
        .map(|(n, v)| format!(" {n} = \"{v}\";"))
        .collect();
    format!(
        "{{ ... }}: {{\n  networking.hostName = \"laptop\";\n  standin.nonce = \"{nonce}\";\n  standin.kernel = \"6.1-{nonce}\";\n  standin.packageBytes = {bytes};\n  standin.packages = {{{pkgs} }};\n}}\n"
    )
}

/// A machine on real Nix behind a real sshd whose agent has `build = "prebuilt"`.
fn machine(test: &str, port_of: impl Fn(&SshMachine) -> u16) -> Option<(SshMachine, String)> {
    if !real_nix::available(test) {
        return None;
    }
    let m = SshMachine::new()?;
    assert!(
        m.real,
        "real Nix is available, so the machine runs the stand-in"
    );
    configure(&m, port_of(&m), "");
    Some((m, real_nix::unique_marker("cache").replace('-', "")))
}

/// agent.toml with `build = "prebuilt"` (and `extra`), the logging `nix-store` wrapper.
fn configure(m: &SshMachine, port: u16, extra: &str) {
    m.write_config(port, &format!("build = \"prebuilt\"\n{extra}"));
    let mut text = fs::read_to_string(&m.config_path).unwrap();
    text.push_str(&format!(
        "nix_store = \"{}\"\n",
        m.root.join("bin/nix-store").display()
    ));
    fs::write(&m.config_path, text).unwrap();
}

/// `fleet publish --build` of the machine's host; the new generation's manifest.
fn publish_built(m: &mut SshMachine) -> Manifest {
    real_nix::set_process_env();
    let opts = PublishOptions {
        build: Some(BuildMode::Build),
        ..PublishOptions::default()
    };
    let r = publish_host(&m.fleet, &m.fleet_config(), "laptop", &opts).expect("publish");
    let g = match r.result {
        HostResult::Published { generation, .. } => generation,
        other => panic!("publish --build: {other:?}"),
    };
    let manifest = read_manifest(&m.host_dir().join(format!("gens/{g}")));
    m.published.insert(g, manifest.clone());
    manifest
}

fn index(m: &Manifest) -> &CacheIndex {
    m.cache
        .as_ref()
        .expect("publish --build lists the host's cache")
}

fn nix_store(args: &[&str]) -> std::process::Output {
    Command::new("nix-store")
        .args(args)
        .envs(real_nix::env())
        .output()
        .expect("nix-store")
}

/// Deletes `paths` from the store (they are this test's own), with what refers to them (this
/// test's derivations: a system's `.drv` keeps its flake's source alive).
fn forget(paths: &[&CachePath]) {
    let mut args = vec!["--query", "--referrers-closure"];
    args.extend(paths.iter().map(|p| p.store_path.as_str()));
    let out = nix_store(&args);
    assert!(
        out.status.success(),
        "nix-store --query --referrers-closure: {out:?}"
    );
    let closure = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut args = vec!["--delete"];
    args.extend(closure.lines());
    let out = nix_store(&args);
    assert!(out.status.success(), "nix-store --delete: {out:?}");
    assert_eq!(invalid(paths).len(), paths.len(), "all gone from the store");
}

fn invalid(paths: &[&CachePath]) -> Vec<String> {
    let mut args = vec!["--check-validity", "--print-invalid"];
    args.extend(paths.iter().map(|p| p.store_path.as_str()));
    let out = nix_store(&args);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The paths of `new` that `old` does not have.
fn changed<'a>(old: &Manifest, new: &'a Manifest) -> Vec<&'a CachePath> {
    let before: BTreeSet<&str> = index(old)
        .paths
        .iter()
        .map(|p| p.store_path.as_str())
        .collect();
    index(new)
        .paths
        .iter()
        .filter(|p| !before.contains(p.store_path.as_str()))
        .collect()
}

/// The report the agent uploaded for generation `g`.
fn report(m: &SshMachine, g: u64) -> serde_json::Value {
    let logs = m.host_dir().join("logs");
    let name = fs::read_dir(&logs)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(&format!("-g{g}-")) && n.ends_with(".json"))
        .max()
        .unwrap_or_else(|| panic!("no report of generation {g} in {}", logs.display()));
    serde_json::from_slice(&fs::read(logs.join(name)).unwrap()).unwrap()
}

/// The Nix commands the agent ran since the last call (the wrappers' log, emptied).
fn take_nix_calls(m: &SshMachine) -> Vec<String> {
    let log = m.root.join("calls.log");
    let text = fs::read_to_string(&log).unwrap_or_default();
    fs::write(&log, "").unwrap();
    text.lines()
        .filter(|l| l.starts_with("nix"))
        .map(str::to_string)
        .collect()
}

/// No evaluation and no build: only the import, the store queries, the profile and the
/// version check.
fn assert_no_evaluation_or_build(calls: &[String]) {
    assert!(
        calls.iter().any(|c| c.starts_with("nix copy --from")),
        "the import ran: {calls:#?}"
    );
    for c in calls {
        let allowed = c.starts_with("nix copy --from")
            || c.starts_with("nix-store --check-validity")
            || c.starts_with("nix-store --realise /nix/store/")
            || c.starts_with("nix-env -p")
            || c == "nix --version";
        assert!(allowed, "`{c}` ran under build = \"prebuilt\": {calls:#?}");
        assert!(!c.contains(".drv"), "`{c}` realised a derivation");
    }
}

fn current(m: &SshMachine) -> String {
    m.current_system().display().to_string()
}

#[test]
fn a_prebuilt_machine_imports_exactly_the_published_system_downloads_only_what_changed_and_refuses_altered_files(
) {
    let test = "a_prebuilt_machine_imports_exactly_the_published_system_downloads_only_what_changed_and_refuses_altered_files";
    let Some((mut m, nonce)) = machine(test, |m| m.srv.port()) else {
        return;
    };
    const BYTES: u64 = 256 * 1024;
    m.write(
        "configuration.nix",
        &configuration(&nonce, &[("a", "1"), ("b", "1")], BYTES),
    );
    let g1 = publish_built(&mut m);
    let sys1 = g1.expected_system.clone().expect("built");
    let all: Vec<&CachePath> = index(&g1).paths.iter().collect();
    assert!(all.len() >= 4, "system, kernel, two packages: {all:#?}");
    forget(&all);
    take_nix_calls(&m);

    // 1. A store without the system: everything comes from the cache, nothing is evaluated.
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        current(&m),
        sys1,
        "the machine runs exactly expected_system"
    );
    assert_no_evaluation_or_build(&take_nix_calls(&m));
    let r1 = report(&m, g1.generation);
    assert_eq!(r1["built_by"], "cache", "{r1}");
    assert_eq!(r1["cache_bytes"], index(&g1).total_bytes(), "{r1}");
    assert!(invalid(&all).is_empty(), "the closure is in the store");

    // 2. One package changes: only the changed paths' files come.
    m.write(
        "configuration.nix",
        &configuration(&nonce, &[("a", "2"), ("b", "1")], BYTES),
    );
    let g2 = publish_built(&mut m);
    let new = changed(&g1, &g2);
    forget(&new);
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    assert_eq!(Some(current(&m)), g2.expected_system);
    assert_no_evaluation_or_build(&take_nix_calls(&m));
    let got = report(&m, g2.generation)["cache_bytes"].as_u64().unwrap();
    let nars: u64 = new.iter().map(|p| p.nar.size).sum();
    let files: u64 = new.iter().map(|p| p.nar.size + p.narinfo.size).sum();
    println!("one-package update: {got} bytes downloaded; the changed paths' NARs are {nars} bytes ({} paths)", new.len());
    assert_eq!(got, files, "exactly the changed paths' narinfos and NARs");
    assert!(
        got * 100 <= nars * 110,
        "{got} bytes is more than 110 % of the changed NARs' {nars}"
    );

    // 3. A NAR, then a narinfo, altered on the server (content and size), then a NAR altered
    // in place (same size): refused before import, nothing activated, the message names the
    // file.
    for (version, alter_nar, grow) in [("2", true, true), ("3", false, true), ("4", true, false)] {
        m.write(
            "configuration.nix",
            &configuration(&nonce, &[("a", "2"), ("b", version)], BYTES),
        );
        let before = current(&m);
        let g = publish_built(&mut m);
        let new = changed(&m.published[&(g.generation - 1)], &g);
        forget(&new);
        let victim = new
            .iter()
            .find(|p| p.store_path.ends_with(&format!("pkg-b-{version}")))
            .expect("the changed package");
        let name = if alter_nar {
            &victim.nar.name
        } else {
            &victim.narinfo.name
        };
        let file = m
            .host_dir()
            .join(format!("gens/{}/cache/{name}", g.generation));
        // A new file in its place (the pool's copy stays as it was).
        let mut body = fs::read(&file).unwrap();
        if grow {
            body.extend_from_slice(b"tampered");
        }
        body[0] ^= 0xff;
        fs::remove_file(&file).unwrap();
        fs::write(&file, &body).unwrap();
        let (code, out) = m.run_once();
        assert_ne!(code, 0, "{out}");
        assert_eq!(current(&m), before, "nothing was activated");
        assert_eq!(invalid(&new).len(), new.len(), "nothing was imported");
        let r = report(&m, g.generation);
        assert_eq!(r["failed_step"], "build", "{r}");
        let msg = r["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(&format!("cache/{name}")) && msg.contains("refused before import"),
            "the message names {name}: {msg}"
        );
    }
}

#[test]
fn a_download_cut_in_the_middle_resumes_without_fetching_what_was_verified() {
    let test = "a_download_cut_in_the_middle_resumes_without_fetching_what_was_verified";
    let Some((mut m, nonce)) = machine(test, |m| m.srv.port()) else {
        return;
    };
    let relay = Relay::start(m.srv.port());
    configure(&m, relay.port, "");
    const BYTES: u64 = 384 * 1024;
    let pkgs = [("p1", "1"), ("p2", "1"), ("p3", "1"), ("p4", "1")];
    m.write("configuration.nix", &configuration(&nonce, &pkgs, BYTES));
    let g = publish_built(&mut m);
    let all: Vec<&CachePath> = index(&g).paths.iter().collect();
    forget(&all);
    let total = index(&g).total_bytes();
    let before = current(&m);

    // The link drops after about half of the closure went through.
    relay.cut_after(Some(total / 2));
    let (code, out) = m.run_once();
    assert_ne!(code, 0, "{out}");
    assert!(relay.cuts() > 0, "the download was cut");
    assert_eq!(current(&m), before, "nothing was activated");
    let kept: Vec<&&CachePath> = all
        .iter()
        .filter(|p| m.state.join("nix-cache").join(&p.nar.name).is_file())
        .collect();
    assert!(
        !kept.is_empty() && kept.len() < all.len(),
        "some NARs were verified before the cut, not all: {} of {}",
        kept.len(),
        all.len()
    );
    let kept_bytes: u64 = kept.iter().map(|p| p.nar.size).sum();

    relay.cut_after(None);
    let (code, out) = m.run_once();
    assert_eq!(code, 0, "{out}");
    assert_eq!(Some(current(&m)), g.expected_system);
    let got = report(&m, g.generation)["cache_bytes"].as_u64().unwrap();
    println!("resumed: {got} of {total} bytes downloaded after the cut ({kept_bytes} kept)");
    assert!(
        got <= total - kept_bytes,
        "{got} bytes downloaded again; {kept_bytes} of {total} were verified before the cut"
    );
    assert!(
        !m.state.join("nix-cache").exists(),
        "imported, then removed"
    );
}

/// Two hosts sharing one package: each publication holds its own closure only, and the NAR they
/// share is one file on the server's disk (a hard link), as are a generation's unchanged NARs.
#[test]
fn a_host_s_publication_holds_only_its_own_closure_and_shared_nars_are_one_file() {
    let test = "a_host_s_publication_holds_only_its_own_closure_and_shared_nars_are_one_file";
    if !real_nix::available(test) {
        return;
    }
    real_nix::set_process_env();
    let d = tempfile::tempdir().unwrap();
    let (repo, chroot) = (d.path().join("repo"), d.path().join("chroot"));
    let nonce = real_nix::unique_marker("iso").replace('-', "");
    let host_conf = |h: &str, own: &str, shared: &str| {
        let dir = repo.join("hosts").join(h);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("flake.nix"), real_nix::flake_nix(h)).unwrap();
        let c = configuration(&nonce, &[("shared", shared), (own, "1")], 4096)
            .replace("\"laptop\"", &format!("\"{h}\""));
        fs::write(dir.join("configuration.nix"), c).unwrap();
    };
    host_conf("alpha", "alphaonly", "1");
    host_conf("beta", "betaonly", "1");
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    fs::write(
        repo.join("fleet.toml"),
        format!(
            "chroot = \"{}\"\nkeep_generations = 1\n[hosts.alpha]\nkey = \"{key}\"\n[hosts.beta]\nkey = \"{key}\"\n",
            chroot.display()
        ),
    )
    .unwrap();
    let config = tiffin::config::FleetConfig::load(&repo).unwrap();
    let opts = PublishOptions {
        build: Some(BuildMode::Build),
        keep_owner: true,
        unsigned: true,
        ..PublishOptions::default()
    };
    let r = tiffin::fleet::publish::publish(&repo, &config, &opts).unwrap();
    assert!(
        r.hosts
            .iter()
            .all(|h| matches!(h.result, HostResult::Published { .. })),
        "{:?}",
        r.hosts
    );
    let table = tiffin::fleet::report::publish_table(&r);
    assert!(
        table.lines().next().is_some_and(|l| l.contains("cache"))
            && table
                .lines()
                .any(|l| l.starts_with("alpha") && l.contains(" paths, ")),
        "the closing table says what each cache holds:\n{table}"
    );
    let manifest = |h: &str, g: u64| read_manifest(&chroot.join(format!("{h}/gens/{g}")));
    let (a, b) = (manifest("alpha", 1), manifest("beta", 1));
    // Exactly its own closure's files, and nothing of beta's own package.
    let files = |h: &str, g: u64| -> BTreeSet<String> {
        let dir = chroot.join(format!("{h}/gens/{g}/cache"));
        let mut v: BTreeSet<String> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "nar")
            .collect();
        v.extend(
            fs::read_dir(dir.join("nar"))
                .unwrap()
                .flatten()
                .map(|e| format!("nar/{}", e.file_name().to_string_lossy())),
        );
        v
    };
    let listed = |m: &Manifest| -> BTreeSet<String> {
        let mut v: BTreeSet<String> = index(m)
            .paths
            .iter()
            .flat_map(|p| [p.narinfo.name.clone(), p.nar.name.clone()])
            .collect();
        v.insert("nix-cache-info".into());
        v
    };
    assert_eq!(files("alpha", 1), listed(&a));
    assert_eq!(files("beta", 1), listed(&b));
    let beta_only: Vec<&CachePath> = index(&b)
        .paths
        .iter()
        .filter(|p| index(&a).path(&p.store_path).is_none())
        .collect();
    assert!(beta_only
        .iter()
        .any(|p| p.store_path.ends_with("pkg-betaonly-1")));
    for p in &beta_only {
        for f in [&p.narinfo.name, &p.nar.name] {
            assert!(
                !chroot.join("alpha/gens/1/cache").join(f).exists(),
                "beta's {f} is in alpha's publication"
            );
        }
    }
    let inode = |h: &str, g: u64, name: &str| {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(chroot.join(format!("{h}/gens/{g}/cache/{name}")))
            .unwrap()
            .ino()
    };
    let shared = index(&a)
        .paths
        .iter()
        .find(|p| p.store_path.ends_with("pkg-shared-1"))
        .unwrap();
    assert_eq!(
        inode("alpha", 1, &shared.nar.name),
        inode("beta", 1, &shared.nar.name),
        "the shared NAR is one file"
    );
    assert!(
        !Path::new(&chroot.join("alpha/.nix-cache")).exists() && chroot.join(".nix-cache").is_dir(),
        "the pool lies beside the chroots, in none of them"
    );

    // alpha's next generation changes its own package: the shared NAR is the previous
    // generation's file; the old package's files leave the pool with the only generation that
    // linked them (keep_generations = 1).
    let shared_inode = inode("alpha", 1, &shared.nar.name);
    let old_own = index(&a)
        .paths
        .iter()
        .find(|p| p.store_path.ends_with("pkg-alphaonly-1"))
        .unwrap()
        .clone();
    assert!(chroot.join(".nix-cache").join(&old_own.nar.name).is_file());
    host_conf("alpha", "alphaonly", "1");
    let c = fs::read_to_string(repo.join("hosts/alpha/configuration.nix")).unwrap();
    fs::write(
        repo.join("hosts/alpha/configuration.nix"),
        c.replace("alphaonly = \"1\"", "alphaonly = \"2\""),
    )
    .unwrap();
    tiffin::fleet::publish::publish(&repo, &config, &opts).unwrap();
    assert_eq!(inode("alpha", 2, &shared.nar.name), shared_inode);
    assert!(!chroot.join("alpha/gens/1").exists(), "pruned");
    for f in [&old_own.narinfo.name, &old_own.nar.name] {
        assert!(
            !chroot.join(".nix-cache").join(f).exists(),
            "{f} left the pool with the last generation linking it"
        );
    }
    assert!(chroot.join(".nix-cache").join(&shared.nar.name).is_file());
    // beta did not change: its cache is the same, so nothing is published (no machine
    // downloads anything).
    let again = tiffin::fleet::publish::publish_host(&repo, &config, "beta", &opts).unwrap();
    assert_eq!(again.result, HostResult::Unchanged { generation: 1 });

    // `[build] prebuild = true`: a plain publish builds and exports too.
    let toml = repo.join("fleet.toml");
    let text = fs::read_to_string(&toml).unwrap();
    fs::write(&toml, format!("{text}[build]\nprebuild = true\n")).unwrap();
    let c = fs::read_to_string(repo.join("hosts/beta/configuration.nix")).unwrap();
    fs::write(
        repo.join("hosts/beta/configuration.nix"),
        c.replace("betaonly = \"1\"", "betaonly = \"2\""),
    )
    .unwrap();
    let config = tiffin::config::FleetConfig::load(&repo).unwrap();
    let plain = PublishOptions {
        build: None,
        ..opts.clone()
    };
    tiffin::fleet::publish::publish_host(&repo, &config, "beta", &plain).unwrap();
    let b2 = manifest("beta", 2);
    assert!(index(&b2)
        .paths
        .iter()
        .any(|p| p.store_path.ends_with("pkg-betaonly-2")));
}

/// The download from the host's cache is in the agent's status as it happens (phase
/// `downloading`, paths and bytes), which `tiffin watch` and the tray show, and gone after.
#[test]
fn the_download_from_the_cache_shows_paths_and_bytes_in_the_status() {
    use tiffin::agent::daemon::status_cell::StatusCell;
    use tiffin::status::{AgentStatus, Outcome, Phase};
    let test = "the_download_from_the_cache_shows_paths_and_bytes_in_the_status";
    let Some((mut m, nonce)) = machine(test, |m| m.srv.port()) else {
        return;
    };
    let pkgs = [("q1", "1"), ("q2", "1"), ("q3", "1"), ("q4", "1")];
    m.write("configuration.nix", &configuration(&nonce, &pkgs, 2 << 20));
    let g = publish_built(&mut m);
    let all: Vec<&CachePath> = index(&g).paths.iter().collect();
    forget(&all);

    let _one = crate::pipeline_support::in_process(&m.root);
    let config = tiffin::config::AgentConfig::load(&m.config_path).unwrap();
    let status = StatusCell::new(AgentStatus::default());
    let mut p = tiffin::agent::Pipeline::new(config, status.clone()).unwrap();
    let cycle = std::thread::spawn(move || p.run_cycle(tiffin::cycle::CycleRequest::Scheduled));
    let mut seen = Vec::new();
    while !cycle.is_finished() {
        let s = status.get();
        if let Some(c) = s.cache_download {
            seen.push((s.phase, c));
        }
        std::thread::sleep(std::time::Duration::from_micros(500));
    }
    let report = cycle.join().unwrap();
    assert_eq!(report.outcome, Outcome::Updated, "{report:?}");
    assert!(!seen.is_empty(), "the download was never in the status");
    for (phase, c) in &seen {
        assert_eq!(*phase, Phase::Downloading);
        assert_eq!(c.total_paths, all.len() as u64);
        assert_eq!(c.total_bytes, index(&g).total_bytes());
        assert!(c.done_bytes <= c.total_bytes && c.done_paths <= c.total_paths);
    }
    let last = seen.last().unwrap().1;
    println!(
        "{} status samples during the download; the last: {}/{} paths, {}/{} bytes",
        seen.len(),
        last.done_paths,
        last.total_paths,
        last.done_bytes,
        last.total_bytes
    );
    assert!(
        status.get().cache_download.is_none(),
        "cleared after the download"
    );
}
