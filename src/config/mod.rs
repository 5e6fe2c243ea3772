//! The two configuration files (DESIGN §10): `fleet.toml` for the admin's side and `agent.toml`
//! for each machine. Strict parsing (unknown keys are errors) with messages that name the file,
//! the line and the column. No I/O beyond reading the file.

pub mod agent;
pub mod fleet;

pub use agent::{AgentConfig, Operation, SystemConfig};
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
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}
