//! Each host's wave: its fleet.toml `wave`, or the last wave of the fleet when it names none.

use crate::config::FleetConfig;
use std::collections::BTreeMap;

pub fn waves_of(config: &FleetConfig) -> BTreeMap<String, u32> {
    let last = config
        .hosts
        .values()
        .filter_map(|h| h.wave)
        .max()
        .unwrap_or(0);
    config
        .hosts
        .iter()
        .map(|(name, h)| (name.clone(), h.wave.unwrap_or(last)))
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::config::FleetConfig;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOhfranTNzd5iz9u62K9DBWkqC9JBYkSle3Nr25o6PSa";

    #[test]
    fn a_host_without_a_wave_is_in_the_last_one() {
        let text = format!(
            "chroot = \"/srv/tiffin\"\n[hosts.a]\nkey = \"{KEY}\"\nwave = 0\n\n[hosts.b]\nkey = \"{KEY}\"\nuser = \"b\"\nwave = 2\n\n[hosts.c]\nkey = \"{KEY}\"\nuser = \"c\"\n"
        );
        let c = FleetConfig::parse(&text, "fleet.toml").unwrap();
        let w = super::waves_of(&c);
        assert_eq!((w["a"], w["b"], w["c"]), (0, 2, 2));
    }
}
