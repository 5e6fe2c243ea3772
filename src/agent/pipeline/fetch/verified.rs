//! The trust check of a manifest against the newest generation ever verified: no replay of an
//! older generation, no other tree under a number already seen.

use super::dirs::{FetchDirs, HighestVerified};
use super::error::FetchError;
use super::trust::TrustPolicy;
use crate::manifest::Manifest;

/// With a trusted key: the manifest must be signed by it, and its generation must be neither
/// older than the applied one nor older than (or a different tree under the same number as) the
/// newest ever verified. A manifest that passes and is newer is recorded as the newest verified.
pub(super) fn check_trust(
    dirs: &FetchDirs,
    trust: &TrustPolicy,
    manifest: &Manifest,
    origin: &str,
) -> Result<(), FetchError> {
    let Some((key, key_file)) = &trust.key else {
        return Ok(());
    };
    let g = manifest.generation;
    let refuse = |why: String| FetchError::Refused {
        place: origin.to_string(),
        why: format!("generation {g} refused: {why}; nothing downloaded or applied"),
    };
    key.verify_manifest(manifest).map_err(|e| {
        refuse(format!(
            "{e} (trusted_key {} requires every manifest to be signed by key {})",
            key_file.display(),
            key.key_id()
        ))
    })?;
    if let Some(applied) = trust.applied_generation.filter(|a| g < *a) {
        return Err(refuse(format!(
            "it is older than generation {applied}, which this machine applied (a replayed publication: the server may be compromised; to go back, publish the old configuration as a new generation)"
        )));
    }
    let highest = dirs.highest_verified()?;
    if let Some(h) = &highest {
        if g < h.generation {
            return Err(refuse(format!(
                "it is older than generation {}, the newest this machine has verified (a replayed publication: the server may be compromised)",
                h.generation
            )));
        }
        if g == h.generation && manifest.tree_hash != h.tree_hash {
            return Err(refuse(format!(
                "this machine verified generation {g} with tree {} before; the server now shows tree {} under the same number",
                h.tree_hash, manifest.tree_hash
            )));
        }
    }
    if highest.as_ref().map_or(true, |h| g > h.generation) {
        dirs.record_verified(&HighestVerified {
            generation: g,
            tree_hash: manifest.tree_hash.clone(),
        })?;
    }
    Ok(())
}
