//! Which hosts still have files sealed to an old key: the live manifest's `sealed.to` is not the
//! fingerprint of the host's key in fleet.toml (the key was rotated and nothing was published
//! since).

use super::records::HostRecords;
use crate::config::fleet::FleetConfig;

/// True when `rec`'s live generation is sealed to another key than fleet.toml's for its host.
pub(super) fn to_old_key(config: &FleetConfig, rec: &HostRecords) -> bool {
    let Some(sealed) = rec.manifest.as_ref().and_then(|m| m.sealed.as_ref()) else {
        return false;
    };
    let Some(host) = config.hosts.get(&rec.host) else {
        return false;
    };
    crate::seal::fingerprint(&host.key).is_ok_and(|now| now != sealed.to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Manifest, Sealed};

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOhfranTNzd5iz9u62K9DBWkqC9JBYkSle3Nr25o6PSa root@laptop";

    #[test]
    fn a_host_whose_files_are_sealed_to_another_key_is_flagged() {
        let config =
            FleetConfig::parse(&format!("[hosts.a]\nkey = \"{KEY}\"\n"), "fleet.toml").unwrap();
        let mut m = Manifest::new("a", 1, "2026-01-01T00:00:00Z".into(), vec![]);
        let mut rec = HostRecords {
            host: "a".into(),
            ..Default::default()
        };
        assert!(!to_old_key(&config, &rec), "nothing published");
        m.sealed = Some(Sealed {
            to: crate::seal::fingerprint(KEY).unwrap(),
            also: vec![],
        });
        rec.manifest = Some(m.clone());
        assert!(!to_old_key(&config, &rec), "sealed to today's key");
        m.sealed.as_mut().unwrap().to = "SHA256:old".into();
        rec.manifest = Some(m);
        assert!(to_old_key(&config, &rec));
    }
}
