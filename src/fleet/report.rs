//! The closing tables of `publish` and `build`, as plain text.

use super::build::BuildReport;
use super::publish::{HostResult, PublishReport};
use std::time::Duration;

/// host, result, generation, files, bytes, time — one line per host.
pub fn publish_table(report: &PublishReport) -> String {
    let rows: Vec<Vec<String>> = report
        .hosts
        .iter()
        .map(|h| {
            let result = match &h.result {
                HostResult::Published {
                    previous: Some(p), ..
                } => format!("published (was {p})"),
                HostResult::Published { previous: None, .. } => "published (first)".into(),
                HostResult::Unchanged { .. } => "unchanged".into(),
                HostResult::WouldPublish { .. } => "would publish".into(),
                HostResult::Failed { .. } => "FAILED".into(),
            };
            vec![
                h.host.clone(),
                result,
                h.generation().map_or("-".into(), |g| g.to_string()),
                h.files.to_string(),
                human_bytes(h.bytes),
                seconds(h.elapsed),
            ]
        })
        .collect();
    let mut head = vec!["host", "result", "generation", "files", "bytes", "time"];
    let mut rows = rows;
    // With `--build`: the binary cache each publication carries.
    if report.hosts.iter().any(|h| h.cache.is_some()) {
        head.push("cache");
        for (row, h) in rows.iter_mut().zip(&report.hosts) {
            row.push(h.cache.map_or("-".into(), |(paths, bytes)| {
                format!("{paths} paths, {}", human_bytes(bytes))
            }));
        }
    }
    table(&head, &rows)
}

/// mirror, result, hosts, files, bytes, time — one line per `[[mirrors]]` entry.
pub fn mirror_table(report: &PublishReport) -> String {
    use super::mirror::MirrorResult;
    let rows: Vec<Vec<String>> = report
        .mirrors
        .iter()
        .map(|m| {
            let result = match &m.result {
                MirrorResult::Pushed => "pushed".to_string(),
                MirrorResult::Unchanged => "unchanged".to_string(),
                MirrorResult::Failed { error } => {
                    format!("FAILED: {}", super::inert::first_line(error, 200))
                }
            };
            vec![
                m.url.clone(),
                result,
                m.hosts.to_string(),
                m.files.to_string(),
                human_bytes(m.bytes),
                seconds(m.elapsed),
            ]
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    table(
        &[
            "mirror",
            "result",
            "hosts",
            "files sent",
            "bytes sent",
            "time",
        ],
        &rows,
    )
}

/// host, result, system, time.
pub fn build_table(report: &BuildReport) -> String {
    let rows: Vec<Vec<String>> = report
        .hosts
        .iter()
        .map(|h| {
            let (result, system) = match &h.result {
                Ok(Some(p)) => ("built".to_string(), p.clone()),
                Ok(None) => ("evaluated".to_string(), "-".to_string()),
                Err(_) => ("FAILED".to_string(), "-".to_string()),
            };
            vec![h.host.clone(), result, system, seconds(h.elapsed)]
        })
        .collect();
    table(&["host", "result", "system", "time"], &rows)
}

fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(head.to_vec());
    out.push_str(&line(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    ));
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// 1536 → "1.5 KiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_shown_in_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
    }
}
