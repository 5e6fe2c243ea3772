//! `publish`'s signing: the fleet's key (required unless `--unsigned`), and the re-signing of an
//! unchanged live generation whose signature got old, so that agents with `max_age` keep
//! accepting a fleet whose configuration did not change.

use super::publish::{set_owner_mode, PublishError, PublishOptions, GEN_FILE_MODE};
use super::users::Ownership;
use crate::config::FleetConfig;
use crate::fsutil;
use crate::manifest::{Manifest, MANIFEST_FILE};
use crate::publication::Publication;
use crate::sign::SecretKey;
use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// The key every new manifest is signed with: the one fleet.toml names, else the default path
/// where `fleet keygen` (and `fleet init`) put it; either must exist. With `--unsigned` nothing
/// is signed, and the run says so once.
pub(super) fn load_signing_key(
    fleet_dir: &Path,
    config: &FleetConfig,
    opts: &PublishOptions,
    warnings: &mut Vec<String>,
) -> Result<Option<SecretKey>, PublishError> {
    if opts.unsigned {
        warnings.push(
            "--unsigned: generations are published unsigned; sftp:// agents refuse them unless their agent.toml says `allow_unsigned = true`, and agents with `trusted_key` always refuse them".into(),
        );
        return Ok(None);
    }
    let (path, _) = config.signing_key_path(fleet_dir);
    if matches!(fs::symlink_metadata(&path), Err(e) if e.kind() == io::ErrorKind::NotFound) {
        return Err(PublishError::NoSigningKey { path });
    }
    Ok(Some(SecretKey::load(&path)?))
}

/// How old a live generation's signature may get before `publish` signs it again (same
/// generation, same tree, a new `signed_at`), so that agents with `max_age` keep accepting a
/// fleet whose configuration did not change.
pub const RESIGN_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The live manifest was signed more than [`RESIGN_AFTER`] ago, or carries no signing time.
pub(super) fn signature_is_stale(m: &Manifest) -> bool {
    let signed = m
        .signed_at
        .as_deref()
        .and_then(|t| humantime::parse_rfc3339(t).ok());
    signed.map_or(true, |t| {
        SystemTime::now()
            .duration_since(t)
            .is_ok_and(|age| age > RESIGN_AFTER)
    })
}

/// Signs the live generation's manifest again with a fresh `signed_at`; written aside and
/// renamed over the old one, so a reader sees either whole file (both valid).
pub(super) fn resign(
    publication: &Publication,
    current: &Manifest,
    key: &SecretKey,
    owner: Ownership,
) -> io::Result<()> {
    let mut m = current.clone();
    key.sign_manifest(&mut m);
    let path = publication.generation_dir(m.generation).join(MANIFEST_FILE);
    fsutil::atomic_write(&path, &m.to_bytes(), GEN_FILE_MODE)?;
    set_owner_mode(&path, owner.tree(), GEN_FILE_MODE)
}
