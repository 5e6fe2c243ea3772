//! fleet.toml's `[secrets]` (docs/configuration.md): whether `fleet publish` seals each host's
//! `files/` and `files.toml` to the host's SSH key, and to which other keys as well.

use serde::Deserialize;

/// The `[secrets]` table. Without it nothing is sealed (fleets made before sealing existed);
/// `tiffin fleet init` writes `seal = true`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// Seal every host's `files/` and `files.toml` to its `key`.
    #[serde(default)]
    pub seal: bool,
    /// Also seal to these keys (an admin's recovery key): SSH public keys (`ssh-ed25519`,
    /// `ssh-rsa`) or age keys (`age1…`).
    #[serde(default)]
    pub recipients: Vec<String>,
}

/// With `seal = true` every host key (`hosts`: name and key) and every extra recipient must be
/// one age can seal to. `at` turns a needle into "file:line:col".
pub(super) fn check(
    secrets: &SecretsConfig,
    hosts: &[(&str, &str)],
    at: &dyn Fn(&str) -> String,
) -> Result<(), String> {
    for r in &secrets.recipients {
        crate::seal::check_recipient(r)
            .map_err(|why| format!("{}: [secrets] recipients: {why}", at(r)))?;
    }
    if !secrets.seal {
        return Ok(());
    }
    for (name, key) in hosts {
        crate::seal::check_recipient(key).map_err(|why| {
            format!(
                "{}: host {name:?}: key: {why}; [secrets] seal = true needs a key files can be sealed to",
                at(key)
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::FleetConfig;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOhfranTNzd5iz9u62K9DBWkqC9JBYkSle3Nr25o6PSa root@laptop";
    const ECDSA: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEmKSENjQEezOmxkZMy7opKgwFB9nkt5YRrYMjNuG5N87uRgg6CLrbo5wAdT/y6v0mKV0U2w0WZ2YB/++Tpockg= x";

    #[test]
    fn without_a_secrets_table_nothing_is_sealed() {
        let c = FleetConfig::parse(&format!("[hosts.a]\nkey = \"{KEY}\"\n"), "fleet.toml").unwrap();
        assert!(!c.secrets.seal);
        let c = FleetConfig::parse(
            &format!(
                "[secrets]\nseal = true\nrecipients = [\"{KEY}\"]\n[hosts.a]\nkey = \"{KEY}\"\n"
            ),
            "fleet.toml",
        )
        .unwrap();
        assert!(c.secrets.seal);
        assert_eq!(c.secrets.recipients.len(), 1);
    }

    #[test]
    fn a_key_age_cannot_seal_to_is_an_error_naming_the_host_and_line() {
        let text = format!("[secrets]\nseal = true\n[hosts.a]\nkey = \"{ECDSA}\"\n");
        let e = FleetConfig::parse(&text, "fleet.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("fleet.toml:4:") && e.contains("host \"a\""),
            "{e}"
        );
        // Not sealing: the same key is fine.
        FleetConfig::parse(&text.replace("seal = true", "seal = false"), "fleet.toml").unwrap();
        let e = FleetConfig::parse("[secrets]\nrecipients = [\"age1bad\"]\n", "fleet.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("fleet.toml:2:") && e.contains("recipients"),
            "{e}"
        );
    }
}
