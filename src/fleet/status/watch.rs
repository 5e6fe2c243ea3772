//! `fleet status --watch`: redraws on inotify events under the chroot, and once a minute.

use super::assess::{fleet_status, FleetStatus};
use super::records::{host_names, FleetViewError};
use super::table::{render_table, Style};
use crate::config::fleet::FleetConfig;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::os::fd::AsFd;
use std::path::Path;

/// What `--watch` prints each time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchOutput {
    /// The table; on a terminal the screen is cleared first, otherwise a blank line separates.
    Table(Style),
    /// One compact JSON document per line.
    Json,
}

/// Redraws on every change under the chroot (a report or `seen.json` arriving in a host's
/// `logs/`, `current` replaced, a host directory appearing), as inotify reports it; and once a
/// minute, so that ages and "not seen" stay true while nothing changes. Runs until killed or
/// until `out` fails (the reader went away).
pub fn watch(
    fleet_dir: &Path,
    output: WatchOutput,
    out: &mut dyn std::io::Write,
) -> Result<(), FleetViewError> {
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
        .map_err(|e| io_err("inotify", e))?;
    let mut config = FleetConfig::load(fleet_dir)?;
    let mut config_problem: Option<String> = None;
    let mut warned_watch = false;
    loop {
        add_watches(&inotify, fleet_dir, &config, &mut warned_watch);
        let now = crate::status::unix_now();
        let status = fleet_status(&config, now);
        let text = render(&status, output, config_problem.as_deref())?;
        if out
            .write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            return Ok(());
        }
        wait_for_change(&inotify, now)?;
        match FleetConfig::load(fleet_dir) {
            Ok(c) => {
                config = c;
                config_problem = None;
            }
            Err(e) => config_problem = Some(e.to_string()),
        }
    }
}

fn io_err(place: &str, e: nix::Error) -> FleetViewError {
    FleetViewError::Io {
        place: place.to_string(),
        source: std::io::Error::from(e),
    }
}

/// Watches the fleet directory, the chroot and each host's directory and `logs/`. Watches are
/// (re)added each round: adding an existing one is a no-op, and hosts or `logs/` directories
/// created since the last round get theirs.
pub(crate) fn add_watches(
    inotify: &Inotify,
    fleet_dir: &Path,
    config: &FleetConfig,
    warned: &mut bool,
) {
    let changes = AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_DELETE;
    let mut dirs = vec![fleet_dir.to_path_buf(), config.chroot.clone()];
    for (h, _) in host_names(config) {
        dirs.push(config.chroot.join(&h));
        dirs.push(config.chroot.join(&h).join("logs"));
    }
    for d in dirs.iter().filter(|d| d.is_dir()) {
        if let Err(e) = inotify.add_watch(d.as_path(), changes) {
            if !*warned {
                *warned = true;
                tracing::warn!(
                    "cannot watch {}: {e} (raise fs.inotify.max_user_watches); changes there show at the next minute",
                    d.display()
                );
            }
        }
    }
}

/// One redraw: a JSON line, or the table (after a screen clear on a colour terminal).
fn render(
    status: &FleetStatus,
    output: WatchOutput,
    config_problem: Option<&str>,
) -> Result<String, FleetViewError> {
    let tty_clear = matches!(output, WatchOutput::Table(s) if s.colour);
    Ok(match output {
        WatchOutput::Json => {
            let mut j = serde_json::to_string(status)
                .map_err(|e| FleetViewError::Unknown(format!("JSON: {e}")))?;
            j.push('\n');
            j
        }
        WatchOutput::Table(style) => {
            let mut t = String::new();
            if tty_clear {
                t.push_str("\x1b[H\x1b[2J");
            }
            t.push_str(&render_table(status, style));
            if let Some(p) = config_problem {
                t.push_str(&format!("fleet.toml: {p} (showing the last valid one)\n"));
            }
            if !tty_clear {
                t.push('\n');
            }
            t
        }
    })
}

/// Sleeps until something changes or the minute turns.
pub(crate) fn wait_for_change(inotify: &Inotify, now: u64) -> Result<(), FleetViewError> {
    let until_minute = ((60 - now % 60) * 1000) as i32;
    let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
    let ready = poll(
        &mut fds,
        PollTimeout::try_from(until_minute).unwrap_or(PollTimeout::MAX),
    );
    match ready {
        Ok(0) => {}
        Ok(_) => {
            // Drain, then let a burst (a report and its log, seen.json) settle briefly so
            // that one upload is one redraw.
            // At most 0.5 s of settling, so that a busy fleet still redraws within a second.
            for _ in 0..5 {
                // Only the wake-up matters; what changed is re-read in full.
                let _ = inotify.read_events();
                let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
                if !matches!(poll(&mut fds, PollTimeout::from(100u8)), Ok(n) if n > 0) {
                    break;
                }
            }
            let _ = inotify.read_events();
        }
        Err(nix::Error::EINTR) => {}
        Err(e) => return Err(io_err("waiting for inotify", e)),
    }
    Ok(())
}
