//! `tiffin fleet logs HOST [--last N]`: a host's latest reports (by their own time, as in
//! `fleet status`) and the text of the newest one's log. Everything the host wrote is printed
//! inert ([`super::inert`]): no control character reaches the terminal.

use super::inert::{first_line, inert_text};
use super::status::{read_host_file, resolve_host, FleetViewError, HostRecords, MAX_LOG_TEXT};
use crate::config::fleet::FleetConfig;
use crate::publication;
use crate::publication::report::{self, Report, ReportName};
use flate2::read::GzDecoder;
use std::io::Read;

/// Writes the listing and the newest log to `out`.
pub fn show_logs(
    config: &FleetConfig,
    host: &str,
    last: usize,
    out: &mut dyn std::io::Write,
) -> Result<(), FleetViewError> {
    resolve_host(config, host)?;
    let rec = HostRecords::read(&config.chroot, host);
    for p in &rec.problems {
        writeln!(out, "warning: {}", inert_text(p)).map_err(stdout_err)?;
    }
    if rec.reports.is_empty() {
        writeln!(
            out,
            "{host} has uploaded no reports yet (looked in {})",
            rec.dir.join(publication::LOGS).display()
        )
        .map_err(stdout_err)?;
        return Ok(());
    }
    let shown = &rec.reports[rec.reports.len().saturating_sub(last.max(1))..];
    writeln!(
        out,
        "{host}: the last {} of {} reports, oldest first",
        shown.len(),
        rec.reports.len()
    )
    .map_err(stdout_err)?;
    let (rows, newest) = report_rows(&rec, shown);
    write_aligned(&rows, out)?;

    // The newest report's log: the name it gives, or the one beside it.
    let Some(last_name) = shown.last() else {
        return Ok(());
    };
    let log_name = newest
        .map(|r| r.log)
        .filter(|l| publication::is_log_name(l) && l.ends_with(".log.gz"))
        .unwrap_or_else(|| publication::log_name(last_name.file.trim_end_matches(".json")));
    write_log(&rec.dir.join(publication::LOGS).join(&log_name), out)
}

fn stdout_err(e: std::io::Error) -> FleetViewError {
    FleetViewError::Io {
        place: "stdout".into(),
        source: e,
    }
}

/// The listing's rows (a header, then one per report), and the newest report when it could be
/// read.
fn report_rows(rec: &HostRecords, shown: &[ReportName]) -> (Vec<[String; 5]>, Option<Report>) {
    let mut rows = vec![[
        "FINISHED".to_string(),
        "GEN".into(),
        "OUTCOME".into(),
        "STEP".into(),
        "MESSAGE".into(),
    ]];
    let mut newest = None;
    for name in shown {
        let (step, message) = match rec.load_report(name) {
            Ok(r) => {
                let mut message = first_line(r.message.as_deref().unwrap_or(""), 200);
                if let Some(n) = r.publication {
                    message = format!("[{}] {message}", n.label());
                }
                // The admin's note of the generation, as the host reported it.
                if let Some(n) = &r.note {
                    message = format!("{message} “{}”", first_line(n, 60));
                }
                let cells = (
                    first_line(r.failed_step.map_or("-", |s| s.name()), 40),
                    message.trim_end().to_string(),
                );
                newest = Some(r);
                cells
            }
            Err(e) => {
                newest = None;
                ("?".into(), first_line(&format!("unreadable: {e}"), 200))
            }
        };
        rows.push([
            report::rfc3339(name.time),
            format!("g{}", name.generation),
            report::outcome_word(name.outcome),
            step,
            message,
        ]);
    }
    (rows, newest)
}

/// The rows in columns two spaces apart.
fn write_aligned(rows: &[[String; 5]], out: &mut dyn std::io::Write) -> Result<(), FleetViewError> {
    let mut widths = [0usize; 5];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in rows {
        let mut line = String::new();
        for (i, (c, w)) in r.iter().zip(widths).enumerate() {
            line.push_str(c);
            if i + 1 < r.len() {
                line.push_str(&" ".repeat(w - c.chars().count() + 2));
            }
        }
        writeln!(out, "{}", line.trim_end()).map_err(stdout_err)?;
    }
    Ok(())
}

/// The log at `path` under a rule with its name, inert.
fn write_log(path: &std::path::Path, out: &mut dyn std::io::Write) -> Result<(), FleetViewError> {
    writeln!(out, "\n── {} ──", path.display()).map_err(stdout_err)?;
    match read_log(path) {
        Ok(text) => {
            let text = inert_text(&text);
            out.write_all(text.as_bytes()).map_err(stdout_err)?;
            if !text.ends_with('\n') {
                writeln!(out).map_err(stdout_err)?;
            }
        }
        Err(e) => writeln!(out, "(no log: {})", inert_text(&e.to_string())).map_err(stdout_err)?,
    }
    Ok(())
}

/// A gzip'd log as text, read without following symlinks and capped (the host wrote it).
pub fn read_log(path: &std::path::Path) -> std::io::Result<String> {
    let gz = read_host_file(path, MAX_LOG_TEXT)?;
    let mut raw = Vec::new();
    GzDecoder::new(gz.as_slice())
        .take(MAX_LOG_TEXT)
        .read_to_end(&mut raw)?;
    Ok(String::from_utf8_lossy(&raw).into_owned())
}
