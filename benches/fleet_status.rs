//! `fleet status` over 1,000 hosts with 50 reports each (100,000 report and log files):
//! reading every host's chroot and deciding its state, rendering the table and the JSON.
//! Prints a table, asserts nothing. Run with `make bench` (release build).

#[path = "../tests/it/support/fleet_status/mod.rs"]
mod fleet_status_support;

use fleet_status_support::{system, Fleet, ReportSpec, SeenSpec};
use std::time::Instant;
use tiffin::fleet::status::{fleet_status, render_table, Style};
use tiffin::status::{unix_now, Outcome};

const HOSTS: usize = 1_000;
const REPORTS: u64 = 50;
const RUNS: usize = 11;

fn main() {
    let names: Vec<String> = (0..HOSTS).map(|i| format!("host{i:04}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let fleet = Fleet::new(&refs);
    let now = unix_now();
    let t = Instant::now();
    for (i, h) in names.iter().enumerate() {
        // Every tenth host has a newer generation published than it runs; a few fail it.
        let published = if i % 10 == 0 { REPORTS + 1 } else { REPORTS };
        fleet.publish(h, published, now - 3600, Some(&system(published)));
        for g in 1..=REPORTS {
            let outcome = match (g, i % 7) {
                (g, 0) if g % 5 == 0 => Outcome::RolledBack,
                _ => Outcome::Updated,
            };
            fleet.report(
                h,
                ReportSpec::new(g, outcome, now - (REPORTS + 1 - g) * 600),
            );
        }
        if i % 10 == 0 && i % 20 == 0 {
            fleet.report(h, ReportSpec::new(published, Outcome::Failed, now - 60));
        }
        fleet.seen(h, SeenSpec::running(REPORTS, now - 120));
    }
    let setup = t.elapsed().as_secs_f64();
    let config = fleet.config();

    let mut assess = Vec::new();
    let mut table = Vec::new();
    let mut json = Vec::new();
    let mut rows = 0;
    let mut table_bytes = 0;
    for _ in 0..RUNS {
        let t = Instant::now();
        let st = fleet_status(&config, now);
        assess.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let text = render_table(&st, Style { colour: true });
        table.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        std::hint::black_box(serde_json::to_vec(&st).expect("JSON"));
        json.push(t.elapsed().as_secs_f64());
        rows = st.hosts.len();
        table_bytes = text.len();
    }
    let total: Vec<f64> = (0..RUNS).map(|i| assess[i] + table[i]).collect();
    println!(
        "fleet status: {HOSTS} hosts × {REPORTS} reports (+ logs, seen.json, manifest); {rows} rows, {table_bytes} bytes of table; setup {setup:.1} s; {RUNS} runs"
    );
    println!("| step | min ms | median ms | max ms |");
    println!("|---|---|---|---|");
    for (what, v) in [
        ("read chroot + decide states", assess),
        ("render table", table),
        ("serialise --json", json),
        ("status as printed (read + table)", total),
    ] {
        let mut v = v;
        v.sort_by(|a, b| a.total_cmp(b));
        println!(
            "| {what} | {:.1} | {:.1} | {:.1} |",
            v[0] * 1e3,
            v[RUNS / 2] * 1e3,
            v[RUNS - 1] * 1e3
        );
    }
}
