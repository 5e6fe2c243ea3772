//! The two configuration files (docs/configuration.md): `fleet.toml` for the admin's side and `agent.toml`
//! for each machine. Strict parsing (unknown keys are errors) with messages that name the file,
//! the line and the column. No I/O beyond reading the file.

pub mod agent;
pub mod backup;
pub mod desk;
pub mod fleet;
pub mod http;
pub mod rollout;
pub mod secrets;

pub use agent::{AgentConfig, Operation, SystemConfig};
pub use backup::{BackupConfig, KeepPolicy};
pub use desk::{RebootWindow, WaitRule};
pub use fleet::{BuildConfig, FleetConfig, HostConfig};

use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// Parses a humantime duration such as `15m` or `60s`.
pub(crate) fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|e| serde::de::Error::custom(format!("{s:?} is not a duration like \"15m\": {e}")))
}

/// Turns a toml error into "FILE:LINE:COL: message".
pub(crate) fn toml_error(file: &str, text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let (line, col) = line_col(text, span.start);
            format!("{file}:{line}:{col}: {}", e.message())
        }
        None => format!("{file}: {}", e.message()),
    }
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    // A parser's span may start inside a multi-byte character: step back to its start.
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_inside_a_multi_byte_character_gets_its_line_and_column() {
        // toml points into the "é" after the bad escape (found by fuzz/fuzz_targets/agent_toml).
        let text = "host = \"a\"\nsource = \"x\\é\"\n";
        let e = toml::from_str::<toml::Value>(text).unwrap_err();
        assert!(!text.is_char_boundary(e.span().unwrap().start), "{e}");
        assert!(toml_error("agent.toml", text, &e).starts_with("agent.toml:2:"));
        assert_eq!(line_col("aé", 2), (1, 2));
    }
}
