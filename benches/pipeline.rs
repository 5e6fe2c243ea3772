//! The agent's cycle against the fake NixOS (assets/fake-nixos) and a `file://` publication:
//! what a no-change check costs (the path every machine takes every interval), and a full update
//! cycle (fetch one changed file, build, activate, verify, commit, report). Prints a table,
//! asserts nothing. Run with `make bench` (release build).

#[path = "../tests/it/support/pipeline/mod.rs"]
mod pipeline_support;
#[path = "../tests/it/support/real_nix/mod.rs"]
mod real_nix;
#[path = "../tests/it/support/mod.rs"]
mod support;

use pipeline_support::Machine;
use std::time::Instant;
use tiffin::agent::daemon::status_cell::StatusCell;
use tiffin::agent::Pipeline;
use tiffin::cycle::CycleRequest;
use tiffin::status::{AgentStatus, Outcome};

const FILES: usize = 2_000;
const RUNS: usize = 7;

fn row(what: &str, mut ms: Vec<f64>) {
    ms.sort_by(|a, b| a.total_cmp(b));
    println!(
        "| {what} | {FILES} | {RUNS} | {:.1} | {:.1} | {:.1} |",
        ms[0],
        ms[ms.len() / 2],
        ms[ms.len() - 1]
    );
}

fn main() {
    let mut m = Machine::fake();
    for i in 0..FILES {
        m.write(
            &format!("modules/d{:02}/m{i:04}.nix", i % 40),
            &format!("{{ ... }}: {{ x{i} = {i}; }}\n"),
        );
    }
    m.publish();
    let status = StatusCell::new(AgentStatus::default());
    let mut p = Pipeline::new(m.config(), status).expect("pipeline");
    let first = p.run_cycle(CycleRequest::Scheduled);
    assert_eq!(first.outcome, Outcome::Updated, "{first:?}");

    let mut check = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let r = p.run_cycle(CycleRequest::Scheduled);
        check.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(r.outcome, Outcome::UpToDate, "{r:?}");
    }
    let mut update = Vec::new();
    let mut steps: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for run in 0..RUNS {
        m.write(
            "configuration.nix",
            &format!("{{ ... }}: {{ run = {run}; }}\n"),
        );
        let g = m.publish();
        let t = Instant::now();
        let r = p.run_cycle(CycleRequest::Scheduled);
        update.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(r.outcome, Outcome::Updated, "{r:?}");
        let (report, _) = m.report(g, "updated");
        if let Some(d) = report["durations"].as_object() {
            for (step, secs) in d {
                steps
                    .entry(step.clone())
                    .or_default()
                    .push(secs.as_f64().unwrap_or(0.0) * 1e3);
            }
        }
    }
    println!("| what | tree files | runs | min ms | median ms | max ms |");
    println!("|---|---|---|---|---|---|");
    row("no-change check (state, journal, seen.json upload)", check);
    row(
        "update: 1 changed file, fake build/activate/verify/commit, report",
        update,
    );
    for (step, ms) in steps {
        row(&format!("update, step `{step}`"), ms);
    }
}
