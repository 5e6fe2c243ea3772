//! fleet.toml `[http] root`: the directory a web server serves (docs/serving.md). For each host
//! with an `http_prefix`, publish keeps `<root>/<prefix>/current.txt` and `<root>/<prefix>/gens`,
//! symlinks into the host's publication, and nothing else: `logs/` and `backup/` (which the host
//! writes) are not reachable from it. The root is mode 0711, so a web server that lists
//! directories by mistake still cannot list the prefixes. Prefix directories of hosts no longer
//! configured, or whose prefix changed, are removed.

use super::outcome::{HostReport, HostResult};
use crate::config::http::check_prefix;
use crate::config::FleetConfig;
use crate::fsutil::{self, with_path};
use crate::publication::layout::{CURRENT_TXT, GENS};
use crate::publication::Publication;
use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

const ROOT_MODE: u32 = 0o711;
const PREFIX_MODE: u32 = 0o755;

/// Links every host of `hosts` that is live (published or unchanged) and has a prefix, then
/// removes what no configured host names. Returns warnings (the publication itself is done).
pub(super) fn update(config: &FleetConfig, hosts: &[HostReport]) -> Vec<String> {
    let Some(http) = &config.http else {
        return Vec::new();
    };
    let root = &http.root;
    let mut warnings = Vec::new();
    if let Err(e) = ensure_dir(root, ROOT_MODE) {
        return vec![format!("[http] root: {e}; the web root was not updated")];
    }
    for r in hosts {
        let live = matches!(
            r.result,
            HostResult::Published { .. } | HostResult::Unchanged { .. }
        );
        let prefix = config
            .hosts
            .get(&r.host)
            .and_then(|h| h.http_prefix.as_deref());
        if let (true, Some(prefix)) = (live, prefix) {
            let publication = Publication::new(&config.chroot, &r.host);
            if let Err(e) = link_host(root, prefix, &publication) {
                warnings.push(format!(
                    "host {}: [http] root: {e}; its web copy may be stale",
                    r.host
                ));
            }
        }
    }
    let keep: BTreeSet<&str> = config
        .hosts
        .values()
        .filter_map(|h| h.http_prefix.as_deref())
        .collect();
    warnings.extend(remove_stale(root, &keep));
    warnings
}

fn ensure_dir(dir: &Path, mode: u32) -> io::Result<()> {
    match fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(with_path(e, dir)),
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(|e| with_path(e, dir))
}

/// `<root>/<prefix>/current.txt -> <publication>/current.txt` and
/// `<root>/<prefix>/gens -> <publication>/gens`, each replaced atomically when it differs.
pub(super) fn link_host(root: &Path, prefix: &str, publication: &Publication) -> io::Result<()> {
    let dir = root.join(prefix);
    ensure_dir(&dir, PREFIX_MODE)?;
    for (name, target) in [
        (CURRENT_TXT, publication.current_txt()),
        (GENS, publication.gens()),
    ] {
        let link = dir.join(name);
        if fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
            fsutil::atomic_symlink(&target, &link)?;
        }
    }
    Ok(())
}

/// Removes the prefix directories not in `keep` that hold only what publish puts there.
fn remove_stale(root: &Path, keep: &BTreeSet<&str>) -> Vec<String> {
    let mut warnings = Vec::new();
    let Ok(rd) = fs::read_dir(root) else {
        return warnings;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if keep.contains(name.as_str()) || check_prefix(&name).is_err() {
            continue;
        }
        let path = e.path();
        if !is_ours(&path) {
            warnings.push(format!(
                "[http] root: {} is not a host's web copy (it holds more than current.txt and gens); left alone",
                path.display()
            ));
            continue;
        }
        if let Err(err) = fs::remove_dir_all(&path) {
            warnings.push(format!(
                "[http] root: {}: cannot remove a stale host prefix: {err}",
                path.display()
            ));
        }
    }
    warnings
}

/// A directory holding only `current.txt` and `gens` symlinks.
fn is_ours(dir: &Path) -> bool {
    let Ok(rd) = fs::read_dir(dir) else {
        return false;
    };
    rd.flatten().all(|e| {
        let name = e.file_name();
        (name == CURRENT_TXT || name == GENS) && e.file_type().is_ok_and(|t| t.is_symlink())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "Zm9vYmFyYmF6cXV4LWZvb2Jh";
    const OTHER: &str = "b3RoZXJwcmVmaXhvdGhlcnBy";

    #[test]
    fn a_host_prefix_links_current_txt_and_gens_only_and_stale_ones_go() {
        let t = tempfile::tempdir().unwrap();
        let p = Publication::new(&t.path().join("chroot"), "laptop");
        let root = t.path().join("web");
        ensure_dir(&root, ROOT_MODE).unwrap();
        link_host(&root, PREFIX, &p).unwrap();
        link_host(&root, OTHER, &p).unwrap();
        let mut names: Vec<_> = fs::read_dir(root.join(PREFIX))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["current.txt", "gens"]);
        assert_eq!(
            fs::read_link(root.join(PREFIX).join("gens")).unwrap(),
            p.gens()
        );
        // Someone's own directory with a prefix-like name is left alone, with a warning.
        let foreign = root.join("c29tZW9uZXNvd25kaXJlY3Rvcnk");
        fs::create_dir(&foreign).unwrap();
        fs::write(foreign.join("index.html"), "hi").unwrap();
        let w = remove_stale(&root, &BTreeSet::from([PREFIX]));
        assert!(root.join(PREFIX).exists() && !root.join(OTHER).exists());
        assert!(
            foreign.exists() && w.len() == 1 && w[0].contains("left alone"),
            "{w:?}"
        );
    }
}
