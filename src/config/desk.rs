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

/// agent.toml `reboot_window = "02:00-05:00"`: local times between which `auto_reboot` may
/// restart the machine (the end may be past midnight: `"23:00-01:00"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RebootWindow {
    /// Minutes after local midnight.
    pub start: u16,
    pub end: u16,
}

impl RebootWindow {
    /// Parses `"HH:MM-HH:MM"`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let minutes = |t: &str| -> Option<u16> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60 && t.trim().len() == 5).then_some(h * 60 + m)
        };
        let bad =
            || format!("{s:?} is not a window like \"02:00-05:00\" (local times, HH:MM-HH:MM)");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let (start, end) = (minutes(a).ok_or_else(bad)?, minutes(b).ok_or_else(bad)?);
        if start == end {
            return Err(format!("{s:?}: the window is empty"));
        }
        Ok(Self { start, end })
    }

    /// Whether `minute` (after local midnight) is inside the window.
    pub fn contains(&self, minute: u16) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

impl<'de> Deserialize<'de> for RebootWindow {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RebootWindow::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `auto_reboot = true` needs a `reboot_window`.
pub fn check(auto_reboot: bool, window: Option<&RebootWindow>) -> Result<(), String> {
    if auto_reboot && window.is_none() {
        return Err(
            "auto_reboot: needs reboot_window (e.g. reboot_window = \"02:00-05:00\")".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod window_tests {
    use super::RebootWindow;

    #[test]
    fn windows_parse_and_may_wrap_past_midnight() {
        let w = RebootWindow::parse("02:00-05:00").unwrap();
        assert!(w.contains(120) && w.contains(299) && !w.contains(300) && !w.contains(0));
        let night = RebootWindow::parse("23:00-01:00").unwrap();
        assert!(night.contains(23 * 60) && night.contains(30) && !night.contains(60));
        for bad in [
            "2:00-05:00",
            "02:00",
            "25:00-01:00",
            "02:00-02:00",
            "ab:cd-01:00",
        ] {
            assert!(RebootWindow::parse(bad).is_err(), "{bad}");
        }
        let base = "host = \"h\"\nsource = \"file:///srv/h\"\n";
        let e =
            crate::config::AgentConfig::parse(&format!("{base}auto_reboot = true\n"), "agent.toml")
                .unwrap_err()
                .to_string();
        assert!(
            e.contains("auto_reboot") && e.contains("reboot_window"),
            "{e}"
        );
    }
}
