//! What a publish run deletes: generations beyond `keep_generations` (never the live one), and
//! with `--prune` the publications of hosts no longer in fleet.toml.

use super::outcome::{push, Orphan, PublishError, PublishOptions};
use crate::config::FleetConfig;
use crate::fsutil::with_path;
use crate::manifest::{is_sealed_path, Manifest};
use crate::publication::Publication;
use std::fs;
use std::sync::Mutex;

/// Prefix of an old generation being deleted (renamed out of `gens/<N>` first).
pub(super) const PRUNING_PREFIX: &str = ".pruning-";

/// Keeps the newest `keep_generations`; a failure here is a warning (the new one is live).
pub(super) fn prune_generations(
    publication: &Publication,
    live: u64,
    keep: usize,
    notes: &Mutex<Vec<String>>,
) {
    let gens = match publication.generations() {
        Ok(g) => g,
        Err(e) => {
            push(notes, &format!("cannot list old generations: {e}"));
            return;
        }
    };
    let old = gens.len().saturating_sub(keep);
    for n in gens.into_iter().take(old).filter(|&n| n != live) {
        remove_generation(publication, n, notes);
    }
}

/// Deletes `gens/<n>`; a failure is a note.
fn remove_generation(publication: &Publication, n: u64, notes: &Mutex<Vec<String>>) {
    let dir = publication.generation_dir(n);
    // Out of sight in one rename first: a run killed while deleting must not leave a
    // half-deleted `gens/<N>` behind (the next run removes the renamed rest).
    let doomed = publication
        .gens()
        .join(format!("{PRUNING_PREFIX}{n}-{}", std::process::id()));
    let removed = fs::rename(&dir, &doomed)
        .map_err(|e| with_path(e, &dir))
        .and_then(|()| fs::remove_dir_all(&doomed).map_err(|e| with_path(e, &doomed)));
    if let Err(e) = removed {
        push(notes, &format!("cannot remove old generation {n}: {e}"));
    }
}

/// Sealing's one-time migration: once a sealed generation is live, the older generations that
/// hold the host's files/ or files.toml in the clear are deleted at once, whatever
/// `keep_generations` says, so that no secret stays readable under the chroot root.
pub(super) fn prune_unsealed(publication: &Publication, live: u64, notes: &Mutex<Vec<String>>) {
    let Ok(gens) = publication.generations() else {
        return;
    };
    for n in gens.into_iter().filter(|&n| n < live) {
        let path = publication
            .generation_dir(n)
            .join(crate::manifest::MANIFEST_FILE);
        let parsed = fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| Manifest::parse(&b, "").map_err(|e| e.to_string()));
        let plain = match parsed {
            Ok(m) => m.sealed.is_none() && m.files().any(|e| is_sealed_path(&e.path)),
            // Unreadable: it may hold anything.
            Err(_) => true,
        };
        if plain {
            remove_generation(publication, n, notes);
        }
    }
}

/// Publications under the chroot root whose host left fleet.toml; deleted with `--prune`.
pub(super) fn orphans(
    config: &FleetConfig,
    opts: &PublishOptions,
) -> Result<Vec<Orphan>, PublishError> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(&config.chroot) else {
        return Ok(out);
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| !n.starts_with('.') && !config.hosts.contains_key(n))
        .collect();
    names.sort();
    for host in names {
        let p = Publication::new(&config.chroot, &host);
        // Only what looks like a publication: never delete a stranger's directory.
        if !p.gens().is_dir() {
            continue;
        }
        let removed = opts.prune && !opts.dry_run;
        if removed {
            fs::remove_dir_all(&p.dir).map_err(|source| PublishError::Prune {
                path: p.dir.clone(),
                source,
            })?;
        }
        out.push(Orphan {
            host,
            dir: p.dir,
            removed,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn gens(p: &Publication, ns: &[u64]) {
        for n in ns {
            fs::create_dir_all(p.generation_dir(*n)).unwrap();
        }
    }

    #[test]
    fn the_newest_generations_are_kept_and_the_rest_removed() {
        let t = tempfile::tempdir().unwrap();
        let p = Publication::new(t.path(), "laptop");
        gens(&p, &[1, 2, 3, 4, 5]);
        let notes = Mutex::default();
        prune_generations(&p, 5, 3, &notes);
        assert_eq!(p.generations().unwrap(), [3, 4, 5]);
        assert!(notes.lock().unwrap().is_empty());
        assert_eq!(
            fs::read_dir(p.gens()).unwrap().count(),
            3,
            "no .pruning- left"
        );
    }

    #[test]
    fn the_live_generation_is_never_pruned() {
        let t = tempfile::tempdir().unwrap();
        let p = Publication::new(t.path(), "laptop");
        gens(&p, &[1, 7, 8, 9]);
        prune_generations(&p, 1, 2, &Mutex::default());
        assert_eq!(p.generations().unwrap(), [1, 8, 9]);
    }

    fn config(chroot: &Path) -> FleetConfig {
        const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOhfranTNzd5iz9u62K9DBWkqC9JBYkSle3Nr25o6PSa root@laptop";
        FleetConfig::parse(
            &format!(
                "chroot = \"{}\"\n[hosts.laptop]\nkey = \"{KEY}\"\n",
                chroot.display()
            ),
            "fleet.toml",
        )
        .unwrap()
    }

    #[test]
    fn only_publications_of_departed_hosts_are_orphans_and_only_prune_deletes_them() {
        let t = tempfile::tempdir().unwrap();
        let c = config(t.path());
        for d in [
            "laptop/gens",
            "gone/gens/1",
            "stranger/data",
            ".hidden/gens",
        ] {
            fs::create_dir_all(t.path().join(d)).unwrap();
        }
        let listed = orphans(&c, &PublishOptions::default()).unwrap();
        let names: Vec<_> = listed
            .iter()
            .map(|o| (o.host.as_str(), o.removed))
            .collect();
        assert_eq!(names, [("gone", false)]);
        assert!(t.path().join("gone").exists());

        let dry = PublishOptions {
            prune: true,
            dry_run: true,
            ..Default::default()
        };
        assert!(!orphans(&c, &dry).unwrap()[0].removed);
        assert!(t.path().join("gone").exists());

        let prune = PublishOptions {
            prune: true,
            ..Default::default()
        };
        assert!(orphans(&c, &prune).unwrap()[0].removed);
        assert!(!t.path().join("gone").exists());
        assert!(
            t.path().join("stranger/data").exists(),
            "not a publication: kept"
        );
    }
}
