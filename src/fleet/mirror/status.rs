//! `fleet status`'s line per mirror: up to date, behind (which hosts, at which generation) or
//! failed (when and why), from `<chroot>/.tiffin-mirrors.json` and the primary's `current`s.
//! Reads only.

use super::state::{MirrorRecord, MirrorState};
use crate::config::FleetConfig;
use crate::fleet::inert::first_line;
use crate::publication::Publication;
use serde::Serialize;

/// One mirror as `fleet status --json` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MirrorView {
    pub url: String,
    /// `up_to_date`, `behind` or `failed`.
    pub state: &'static str,
    /// Hosts whose publication on the mirror is older than the primary's (or missing):
    /// host, its generation there, the primary's.
    pub behind: Vec<(String, Option<u64>, u64)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success: Option<String>,
}

/// Every `[[mirrors]]` entry's view; an unreadable state file makes every mirror "failed"
/// with that reason.
pub fn mirror_views(config: &FleetConfig) -> Vec<MirrorView> {
    let state = MirrorState::load(&config.chroot);
    let live: Vec<(String, u64)> = config
        .hosts
        .keys()
        .filter_map(|h| {
            let g = Publication::new(&config.chroot, h)
                .current_generation()
                .ok()
                .flatten()?;
            Some((h.clone(), g))
        })
        .collect();
    config
        .mirrors
        .iter()
        .map(|m| {
            let (record, unreadable) = match &state {
                Ok(s) => (s.mirrors.get(&m.url).cloned().unwrap_or_default(), None),
                Err(e) => (MirrorRecord::default(), Some(e.clone())),
            };
            view(&m.url, &record, &live, unreadable)
        })
        .collect()
}

fn view(
    url: &str,
    record: &MirrorRecord,
    live: &[(String, u64)],
    unreadable: Option<String>,
) -> MirrorView {
    let behind: Vec<(String, Option<u64>, u64)> = live
        .iter()
        .filter_map(|(h, g)| {
            let there = record.hosts.get(h).copied();
            (there != Some(*g)).then(|| (h.clone(), there, *g))
        })
        .collect();
    let last_error = unreadable.or_else(|| record.last_error.clone());
    let state = match (&last_error, behind.is_empty()) {
        (Some(_), _) => "failed",
        (None, true) => "up_to_date",
        (None, false) => "behind",
    };
    MirrorView {
        url: url.to_string(),
        state,
        behind,
        last_error,
        last_attempt: record.last_attempt.clone(),
        last_success: record.last_success.clone(),
    }
}

/// The lines printed above the hosts' table, one per mirror.
pub fn status_lines(config: &FleetConfig) -> Vec<String> {
    mirror_views(config).iter().map(line).collect()
}

fn line(v: &MirrorView) -> String {
    let behind = || {
        v.behind
            .iter()
            .map(|(h, there, g)| match there {
                Some(t) => format!("{h} g{t} (primary g{g})"),
                None => format!("{h} not pushed (primary g{g})"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut s = format!("mirror {}: ", v.url);
    match v.state {
        "up_to_date" => s.push_str("up to date"),
        "behind" => s.push_str(&format!("behind: {}", behind())),
        _ => {
            s.push_str("FAILED");
            if let Some(t) = &v.last_attempt {
                s.push_str(&format!(" at {t}"));
            }
            if let Some(e) = &v.last_error {
                s.push_str(&format!(": {}", first_line(e, 300)));
            }
            if !v.behind.is_empty() {
                s.push_str(&format!("; behind: {}", behind()));
            }
            s.push_str("; the next publish retries");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_up_to_date_behind_or_failed() {
        let live = vec![("a".to_string(), 4), ("b".to_string(), 2)];
        let mut r = MirrorRecord::default();
        r.hosts.insert("a".into(), 4);
        r.hosts.insert("b".into(), 2);
        assert_eq!(
            line(&view("sftp://m", &r, &live, None)),
            "mirror sftp://m: up to date"
        );
        r.hosts.insert("a".into(), 3);
        r.hosts.remove("b");
        assert_eq!(
            line(&view("sftp://m", &r, &live, None)),
            "mirror sftp://m: behind: a g3 (primary g4), b not pushed (primary g2)"
        );
        r.last_error = Some("connection refused".into());
        r.last_attempt = Some("2026-01-01T00:00:00Z".into());
        let l = line(&view("sftp://m", &r, &live, None));
        assert!(
            l.starts_with(
                "mirror sftp://m: FAILED at 2026-01-01T00:00:00Z: connection refused; behind: a g3"
            ),
            "{l}"
        );
    }
}
