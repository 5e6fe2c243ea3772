//! A release's id: `r-` and 16 hex digits of the sha256 over every host's name and tree hash,
//! so the same repository content is the same release (and a quarantined one is recognised).

use crate::config::FleetConfig;
use crate::fleet::publish::host_tree_hash;
use std::path::Path;

pub fn release_id(fleet_dir: &Path, config: &FleetConfig) -> Result<String, super::RolloutError> {
    let mut text = String::new();
    for host in config.hosts.keys() {
        let h = host_tree_hash(fleet_dir, config, host)
            .map_err(|e| super::RolloutError::Release(format!("host {host}: {e}")))?;
        text.push_str(&format!("{host}\t{h}\n"));
    }
    let digest = crate::hash::sha256_bytes(text.as_bytes());
    Ok(format!("r-{}", &digest[..16]))
}
