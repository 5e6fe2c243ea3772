//! The tray's rows of the suite (footprint at rest, responsiveness). The tray and its D-Bus test
//! harness are not in this tree yet: each measurement says why it cannot run.
#![allow(dead_code)]

use std::time::Duration;

pub struct TrayIdle {
    pub cpu_ms: f64,
    /// VmRSS samples, one a second, in KiB.
    pub rss_kib: Vec<f64>,
}

pub struct Responsiveness {
    pub status_to_menu_ms: Vec<f64>,
    pub click_to_phase_ms: Vec<f64>,
    pub notes: Vec<String>,
}

const TRAY: &str = env!("CARGO_BIN_EXE_tiffin-tray");

/// Why the tray cannot be measured here.
fn unavailable() -> String {
    let out = tiffin::runner::Runner::new().run(TRAY, &["--help"], Some(Duration::from_secs(10)));
    match out {
        Ok(o) if (o.stdout.clone() + &o.stderr).contains("not implemented") => {
            "tray not built (tiffin-tray is still the stub)".into()
        }
        Ok(_) => "tray built, but its D-Bus harness is not in this tree".into(),
        Err(e) => format!("tray not built ({e})"),
    }
}

pub fn idle(_secs: u64) -> Result<TrayIdle, String> {
    Err(unavailable())
}

pub fn responsiveness() -> Result<Responsiveness, String> {
    Err(unavailable())
}
