//! agent.toml's `[backup]` table (docs/backup.md): what restic backs up into the host's own
//! `backup/` on the server, how often, and what it keeps.

use super::de_duration;
use serde::{Deserialize, Deserializer};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[backup]`; absent: the agent makes no backups.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// Absolute paths to back up.
    pub paths: Vec<PathBuf>,
    /// restic `--exclude` patterns.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// `"hourly"`, `"daily"`, `"weekly"` or a duration such as `"6h"`.
    #[serde(default = "d::schedule", deserialize_with = "de_schedule")]
    pub schedule: Duration,
    /// Random delay added to each scheduled backup.
    #[serde(default = "d::jitter", deserialize_with = "de_duration")]
    pub jitter: Duration,
    /// restic's forget policy (`keep-daily` …); all unset: every snapshot is kept.
    #[serde(default)]
    pub keep: KeepPolicy,
    /// The repository password; empty: `<state_dir>/backup/password`, made at the first run.
    #[serde(default)]
    pub password_file: PathBuf,
    /// The restic program.
    #[serde(default = "d::restic")]
    pub restic: String,
    /// A run (backup and forget) taking longer is stopped and reported as failed.
    #[serde(default = "d::timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
}

/// restic's `forget --keep-*` numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepPolicy {
    pub last: Option<u32>,
    pub hourly: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
    pub yearly: Option<u32>,
}

impl KeepPolicy {
    /// `--keep-daily 7 …`; empty when nothing is set (then nothing is forgotten).
    pub fn args(&self) -> Vec<String> {
        [
            ("last", self.last),
            ("hourly", self.hourly),
            ("daily", self.daily),
            ("weekly", self.weekly),
            ("monthly", self.monthly),
            ("yearly", self.yearly),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|n| [format!("--keep-{k}"), n.to_string()]))
        .flatten()
        .collect()
    }
}

mod d {
    use std::time::Duration;
    pub fn schedule() -> Duration {
        Duration::from_secs(24 * 3600)
    }
    pub fn jitter() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn restic() -> String {
        "restic".into()
    }
    pub fn timeout() -> Duration {
        Duration::from_secs(6 * 3600)
    }
}

/// `"hourly"`, `"daily"`, `"weekly"`, or a duration.
fn de_schedule<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    let hours = match s.as_str() {
        "hourly" => Some(1),
        "daily" => Some(24),
        "weekly" => Some(7 * 24),
        _ => None,
    };
    match hours {
        Some(h) => Ok(Duration::from_secs(h * 3600)),
        None => humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "{s:?} is not \"hourly\", \"daily\", \"weekly\" or a duration like \"6h\": {e}"
            ))
        }),
    }
}

impl BackupConfig {
    /// The password file: the configured one, or `<state_dir>/backup/password`.
    pub fn password_path(&self, state_dir: &Path) -> PathBuf {
        if self.password_file.as_os_str().is_empty() {
            state_dir.join("backup").join("password")
        } else {
            self.password_file.clone()
        }
    }

    /// The checks serde cannot make; `Err((key, why))` names the key under `[backup]`.
    pub fn validate(&self, max: Duration) -> Result<(), (String, String)> {
        let bad = |k: &str, why: String| Err((format!("backup.{k}"), why));
        if self.paths.is_empty() {
            return bad("paths", "must name at least one absolute path".into());
        }
        for p in &self.paths {
            if !p.is_absolute() {
                return bad("paths", format!("{} is not an absolute path", p.display()));
            }
        }
        if !self.password_file.as_os_str().is_empty() && !self.password_file.is_absolute() {
            return bad(
                "password_file",
                format!("{} is not an absolute path", self.password_file.display()),
            );
        }
        for (k, v) in [
            ("schedule", self.schedule),
            ("jitter", self.jitter),
            ("timeout", self.timeout),
        ] {
            if v > max {
                return bad(k, format!("{} is too long", humantime::format_duration(v)));
            }
        }
        for (k, v) in [("schedule", self.schedule), ("timeout", self.timeout)] {
            if v < Duration::from_secs(60) {
                return bad(k, "must be at least 1m".into());
            }
        }
        if self.restic.is_empty() {
            return bad("restic", "must name the restic program".into());
        }
        Ok(())
    }
}

/// restic splits `sftp.command` at whitespace and quotes: a path holding either cannot be passed.
pub fn sftp_command_safe(p: &Path) -> bool {
    !p.to_string_lossy()
        .chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\'' || c == '\\')
}

#[cfg(test)]
mod tests {
    use crate::config::AgentConfig;
    use std::time::Duration;

    const BASE: &str = "host = \"a\"\nsource = \"file:///x\"\n";

    #[test]
    fn a_backup_table_reads_schedule_words_and_keep_policy() {
        let c = AgentConfig::parse(
            &format!("{BASE}[backup]\npaths = [\"/home\"]\nschedule = \"daily\"\nkeep = {{ daily = 7, weekly = 4, monthly = 6 }}\n"),
            "agent.toml",
        )
        .unwrap();
        let b = c.backup.unwrap();
        assert_eq!(b.schedule, Duration::from_secs(86400));
        assert_eq!(
            b.keep.args(),
            [
                "--keep-daily",
                "7",
                "--keep-weekly",
                "4",
                "--keep-monthly",
                "6"
            ]
        );
        assert!(b
            .password_path(&c.state_dir)
            .ends_with("tiffin/backup/password"));
    }

    #[test]
    fn bad_backup_settings_are_refused_by_name() {
        for (table, key) in [
            ("paths = []", "backup.paths"),
            ("paths = [\"home\"]", "backup.paths"),
            (
                "paths = [\"/h\"]\npassword_file = \"pw\"",
                "backup.password_file",
            ),
            ("paths = [\"/h\"]\nschedule = \"10s\"", "backup.schedule"),
            ("paths = [\"/h\"]\nschedule = \"often\"", "often"),
            ("paths = [\"/h\"]\nkeep = { dialy = 3 }", "dialy"),
        ] {
            let e = AgentConfig::parse(&format!("{BASE}[backup]\n{table}\n"), "agent.toml")
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && e.starts_with("agent.toml"), "{e}");
        }
    }
}

/// A size such as `"50G"`, `"500M"`, `"2T"`, `"1024K"` or a number of bytes (binary units).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&s[..i], s[i..].trim()),
        None => (s, ""),
    };
    let n: u64 = num.parse().ok()?;
    let shift = match unit.trim_end_matches("iB").trim_end_matches('B') {
        "" => 0,
        "K" | "k" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

/// fleet.toml's `backup_quota`.
pub(crate) fn de_opt_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let s = String::deserialize(d)?;
    parse_size(&s).map(Some).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "{s:?} is not a size like \"50G\", \"500M\" or \"2T\""
        ))
    })
}

#[cfg(test)]
mod size_tests {
    use super::parse_size;

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(parse_size("50G"), Some(50 << 30));
        assert_eq!(parse_size("500MiB"), Some(500 << 20));
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("2 T"), Some(2 << 40));
        for bad in ["", "G", "5X", "-1G", "99999999999T"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }
}
