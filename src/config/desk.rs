//! agent.toml's keys for the person at the machine: whether automatic updates wait while the
//! machine runs on battery (`on_battery`) or on a metered network (`on_metered`).

use serde::{Deserialize, Serialize};

/// What an automatic update does under a condition (`"wait"` or `"ignore"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitRule {
    /// Automatic updates wait until the condition clears; a click or `tiffin update` goes ahead.
    #[default]
    Wait,
    /// The condition does not matter.
    Ignore,
}

#[cfg(test)]
mod tests {
    use crate::config::AgentConfig;

    const BASE: &str = "host = \"h\"\nsource = \"file:///srv/h\"\n";

    #[test]
    fn both_wait_by_default_and_take_ignore() {
        let c = AgentConfig::parse(BASE, "agent.toml").unwrap();
        assert_eq!(c.on_battery, super::WaitRule::Wait);
        assert_eq!(c.on_metered, super::WaitRule::Wait);
        let c = AgentConfig::parse(
            &format!("{BASE}on_battery = \"ignore\"\non_metered = \"ignore\"\n"),
            "agent.toml",
        )
        .unwrap();
        assert_eq!(c.on_battery, super::WaitRule::Ignore);
        assert_eq!(c.on_metered, super::WaitRule::Ignore);
        let e = AgentConfig::parse(&format!("{BASE}on_battery = \"sometimes\"\n"), "agent.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("agent.toml:3") && e.contains("on_battery") || e.contains("wait"),
            "{e}"
        );
    }
}
