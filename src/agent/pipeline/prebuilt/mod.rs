//! Step 3 from the host's binary cache (`build = "auto"` with a cache, `build = "prebuilt"`;
//! docs/agent.md): no evaluation and no build on the machine. The store is asked which paths
//! of the published closure it lacks (`nix-store --check-validity --print-invalid`); only
//! their narinfos and NARs are downloaded ([`download`]), each checked against the signed
//! manifest; the narinfos are checked to describe what the manifest says (path, NAR, references
//! inside the closure); then `nix copy --from file://… --no-check-sigs --no-recursive` imports
//! exactly those paths (Nix checks each NAR's hash as it unpacks it) and
//! `nix-store --realise <expected_system> --add-root` makes the system a GC root for the cycle.

pub mod download;

pub use download::DownloadError;

use super::build::gcroot;
use super::system::command_failure_within;
use crate::config::agent::BuildPolicy;
use crate::config::AgentConfig;
use crate::manifest::cache::{CacheIndex, CachePath};
use crate::manifest::Manifest;
use crate::nixcache::{import_args, parse_narinfo, CACHE_INFO};
use crate::runner::Runner;
use crate::source::Source;
use crate::status::CacheProgress;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The directory under the state directory the downloads go to.
pub const CACHE_DIR: &str = "nix-cache";

/// How the system of a generation is made on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Evaluate and build here.
    Local,
    /// Download and import from the host's binary cache.
    Cache,
}

/// The route `policy` takes for `manifest`; `Err` when `prebuilt` meets a generation without a
/// cache.
pub fn route(policy: BuildPolicy, manifest: &Manifest) -> Result<Route, String> {
    let has_cache = manifest.cache.is_some() && manifest.expected_system.is_some();
    match (policy, has_cache) {
        (BuildPolicy::Local, _) | (BuildPolicy::Auto, false) => Ok(Route::Local),
        (_, true) => Ok(Route::Cache),
        (BuildPolicy::Prebuilt, false) => Err(format!(
            "generation {} has no binary cache and this machine has build = \"prebuilt\", so it never evaluates or builds; publish it with `tiffin fleet publish --build` (or `[build] prebuild = true` in fleet.toml)",
            manifest.generation
        )),
    }
}

/// What [`realise`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Realised {
    pub system: String,
    /// Paths the store lacked (all imported).
    pub missing_paths: usize,
    /// Bytes downloaded in this cycle (files verified in an earlier, cut one are not counted).
    pub downloaded_bytes: u64,
}

/// Makes the generation's `expected_system` valid in the store from its cache (see the module).
pub fn realise(
    runner: &Runner,
    config: &AgentConfig,
    source: &mut dyn Source,
    manifest: &Manifest,
    progress: &mut dyn FnMut(CacheProgress),
) -> Result<Realised, DownloadError> {
    let (Some(index), Some(system)) = (&manifest.cache, manifest.expected_system.as_deref()) else {
        return Err(format!("generation {} has no binary cache", manifest.generation).into());
    };
    let dir = config.state_dir.join(CACHE_DIR);
    let missing = invalid_paths(runner, config, index)?;
    runner.note(&format!(
        "cache: {} of {} paths of {system} missing from the store",
        missing.len(),
        index.paths.len()
    ));
    let done = download::download(source, manifest.generation, &missing, &dir, progress)?;
    runner.note(&format!(
        "cache: {} files, {} bytes downloaded",
        done.files, done.bytes
    ));
    check_narinfos(&dir, index, &missing)?;
    if !missing.is_empty() {
        import(runner, config, &dir, &missing)?;
    }
    root_system(runner, config, system)?;
    // Imported: the store holds them now.
    let _ = fs::remove_dir_all(&dir);
    Ok(Realised {
        system: system.to_string(),
        missing_paths: missing.len(),
        downloaded_bytes: done.bytes,
    })
}

/// The paths of the closure the store lacks, from `nix-store --check-validity --print-invalid`.
fn invalid_paths<'a>(
    runner: &Runner,
    config: &AgentConfig,
    index: &'a CacheIndex,
) -> Result<Vec<&'a CachePath>, String> {
    let mut args = vec!["--check-validity".to_string(), "--print-invalid".into()];
    args.extend(index.paths.iter().map(|p| p.store_path.clone()));
    let out = runner
        .run(&config.system.nix_store, &args, Some(config.build_timeout))
        .map_err(|e| format!("{}: {e}", config.system.nix_store))?;
    if let Some(why) = command_failure_within(&out, "build_timeout") {
        return Err(why);
    }
    let mut missing = Vec::new();
    for line in out.stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let p = index.path(line).ok_or_else(|| {
            format!(
                "`{}` named {line:?}, which is not in the closure",
                out.command
            )
        })?;
        missing.push(p);
    }
    Ok(missing)
}

/// Every downloaded narinfo describes its path, names its NAR, and refers only to paths of the
/// closure (the manifest's hashes already vouch for the bytes; this vouches for their meaning).
fn check_narinfos(dir: &Path, index: &CacheIndex, missing: &[&CachePath]) -> Result<(), String> {
    let closure: BTreeSet<&str> = index.paths.iter().map(|p| p.store_path.as_str()).collect();
    for p in missing {
        let file = dir.join(&p.narinfo.name);
        let origin = format!("cache/{}", p.narinfo.name);
        let text = fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let n = parse_narinfo(&text, &origin)?;
        let wrong = if n.store_path != p.store_path {
            Some(format!("describes {}, not {}", n.store_path, p.store_path))
        } else if n.url != p.nar.name {
            Some(format!("names NAR {}, the manifest {}", n.url, p.nar.name))
        } else {
            n.references
                .iter()
                .find(|r| !closure.contains(r.as_str()))
                .map(|r| format!("refers to {r}, outside the published closure"))
        };
        if let Some(why) = wrong {
            return Err(format!("{origin}: {why}; refused before import"));
        }
    }
    Ok(())
}

/// `nix copy --from file://<dir> --no-check-sigs --no-recursive <missing>`.
fn import(
    runner: &Runner,
    config: &AgentConfig,
    dir: &Path,
    missing: &[&CachePath],
) -> Result<(), String> {
    fs::write(dir.join("nix-cache-info"), CACHE_INFO)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let paths: Vec<String> = missing.iter().map(|p| p.store_path.clone()).collect();
    let out = runner
        .run(
            &config.system.nix,
            &import_args(dir, &paths),
            Some(config.build_timeout),
        )
        .map_err(|e| format!("{}: {e}", config.system.nix))?;
    match command_failure_within(&out, "build_timeout") {
        Some(_) if !out.timed_out => Err(crate::nixcli::describe_failure(&out)),
        Some(why) => Err(why),
        None => Ok(()),
    }
}

/// `nix-store --realise <system> --add-root <state_dir>/build-result --indirect`: the system,
/// valid now, held as the cycle's GC root (as a local build's `--out-link` is).
fn root_system(runner: &Runner, config: &AgentConfig, system: &str) -> Result<(), String> {
    let link: PathBuf = gcroot::link(&config.state_dir);
    let args = [
        "--realise".to_string(),
        system.to_string(),
        "--add-root".into(),
        link.display().to_string(),
        "--indirect".into(),
    ];
    let out = runner
        .run(&config.system.nix_store, &args, Some(config.build_timeout))
        .map_err(|e| format!("{}: {e}", config.system.nix_store))?;
    if let Some(why) = command_failure_within(&out, "build_timeout") {
        return Err(why);
    }
    if !Path::new(system)
        .join("bin/switch-to-configuration")
        .exists()
    {
        return Err(format!(
            "{system}, imported from the host's cache, has no bin/switch-to-configuration"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::cache::CacheFile;

    fn path(h: char, name: &str) -> CachePath {
        let hash: String = std::iter::repeat_n(h, 32).collect();
        let f = |name: String| CacheFile {
            name,
            size: 1,
            sha256: "a".repeat(64),
        };
        CachePath {
            store_path: format!("/nix/store/{hash}-{name}"),
            narinfo: f(format!("{hash}.narinfo")),
            nar: f(format!("nar/{h}.nar.zst")),
        }
    }

    #[test]
    fn a_narinfo_must_describe_its_path_name_its_nar_and_stay_inside_the_closure() {
        let d = tempfile::tempdir().unwrap();
        let index = CacheIndex {
            paths: vec![path('a', "pkg"), path('b', "system")],
        };
        let (pkg, sys) = (&index.paths[0], &index.paths[1]);
        let write = |p: &CachePath, store_path: &str, url: &str, refs: &str| {
            let text = format!("StorePath: {store_path}\nURL: {url}\nReferences: {refs}\n");
            fs::write(d.path().join(&p.narinfo.name), text).unwrap();
        };
        let refs = sys.store_path.trim_start_matches("/nix/store/").to_string();
        let pkg_ref = pkg.store_path.trim_start_matches("/nix/store/").to_string();
        write(
            sys,
            &sys.store_path,
            &sys.nar.name,
            &format!("{pkg_ref} {refs}"),
        );
        check_narinfos(d.path(), &index, &[sys]).unwrap();

        write(sys, &pkg.store_path, &sys.nar.name, "");
        let e = check_narinfos(d.path(), &index, &[sys]).unwrap_err();
        assert!(
            e.contains(&sys.narinfo.name) && e.contains("describes"),
            "{e}"
        );

        write(sys, &sys.store_path, &pkg.nar.name, "");
        let e = check_narinfos(d.path(), &index, &[sys]).unwrap_err();
        assert!(e.contains("names NAR"), "{e}");

        let outside = format!("{}-evil", "c".repeat(32));
        write(sys, &sys.store_path, &sys.nar.name, &outside);
        let e = check_narinfos(d.path(), &index, &[sys]).unwrap_err();
        assert!(e.contains("outside the published closure"), "{e}");
    }

    #[test]
    fn prebuilt_without_a_cache_fails_saying_how_to_publish_one() {
        let mut m = Manifest::new("h", 7, "2026-01-01T00:00:00Z".into(), vec![]);
        assert_eq!(route(BuildPolicy::Auto, &m), Ok(Route::Local));
        let e = route(BuildPolicy::Prebuilt, &m).unwrap_err();
        assert!(
            e.contains("generation 7") && e.contains("publish --build"),
            "{e}"
        );
        m.expected_system = Some("/nix/store/x".into());
        m.cache = Some(CacheIndex::default());
        assert_eq!(route(BuildPolicy::Auto, &m), Ok(Route::Cache));
        assert_eq!(route(BuildPolicy::Local, &m), Ok(Route::Local));
    }
}
