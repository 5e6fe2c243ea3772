//! fleet.toml's `[rollout]` table: how `fleet rollout` and `fleet watch` promote a staged
//! release from one wave to the next (docs/configuration.md).

use super::de_duration;
use serde::Deserialize;
use std::time::Duration;

/// `[rollout]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutConfig {
    /// How long a wave must have had the release before the next wave gets it (`fleet rollout
    /// --soak` overrides it).
    #[serde(default = "default_soak", deserialize_with = "de_duration")]
    pub soak: Duration,
    /// A host of the wave not seen for this long is listed and, unless `wait_for_unseen`, does
    /// not hold the rollout back.
    #[serde(default = "default_grace", deserialize_with = "de_duration")]
    pub grace: Duration,
    /// Hosts not seen within `grace` hold the rollout back too.
    #[serde(default)]
    pub wait_for_unseen: bool,
}

fn default_soak() -> Duration {
    Duration::from_secs(3600)
}
fn default_grace() -> Duration {
    Duration::from_secs(3600)
}

impl Default for RolloutConfig {
    fn default() -> Self {
        Self {
            soak: default_soak(),
            grace: default_grace(),
            wait_for_unseen: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::FleetConfig;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOhfranTNzd5iz9u62K9DBWkqC9JBYkSle3Nr25o6PSa";

    #[test]
    fn rollout_keys_parse_and_a_bad_duration_is_named() {
        let text = format!(
            "chroot = \"/srv/tiffin\"\n[rollout]\nsoak = \"10m\"\ngrace = \"2h\"\n\n[hosts.a]\nkey = \"{KEY}\"\nwave = 0\n\n[hosts.b]\nkey = \"{KEY}\"\nuser = \"b\"\nwave = 2\n\n[hosts.c]\nkey = \"{KEY}\"\nuser = \"c\"\n"
        );
        let c = FleetConfig::parse(&text, "fleet.toml").unwrap();
        assert_eq!(c.hosts["a"].wave, Some(0));
        assert_eq!(c.rollout.soak.as_secs(), 600);
        assert_eq!(c.rollout.grace.as_secs(), 7200);
        let bad = text.replace("soak = \"10m\"", "soak = \"soon\"");
        let e = FleetConfig::parse(&bad, "fleet.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("fleet.toml:") && e.contains("soon"), "{e}");
    }
}
