//! agent.toml `auto_reboot = true` with `reboot_window = "02:00-05:00"`: when a restart is
//! needed (a new kernel, initrd or modules), the agent asks logind to reboot inside the window —
//! at once when nobody is logged in; after warning through the tray ([`WARNING`] ahead, the
//! status's `reboot_planned`) when someone is logged in but no session is active; never while a
//! session is active or a cycle runs.

use super::status_cell::StatusCell;
use crate::config::RebootWindow;
use crate::status::AgentStatus;
use std::time::Duration;
use tokio::sync::broadcast;
use zbus::{Connection, Proxy};

/// How long logged-in users are warned before the restart.
pub const WARNING: u64 = 5 * 60;
/// How often the window and the sessions are looked at while a restart is needed.
const TICK: Duration = Duration::from_secs(30);

/// Who is logged in, as logind says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sessions {
    pub any: bool,
    pub any_active: bool,
}

/// What to do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing (and no restart planned).
    Nothing,
    /// Plan the restart at this time and warn.
    Warn(u64),
    /// Wait for the planned time.
    Wait,
    Reboot,
}

/// The decision for status `s` at `now`, whose local minute after midnight is `minute`.
pub fn decide(
    s: &AgentStatus,
    window: &RebootWindow,
    minute: u16,
    sessions: Sessions,
    now: u64,
) -> Decision {
    if !s.reboot_needed || s.phase.is_busy() || !window.contains(minute) || sessions.any_active {
        return Decision::Nothing;
    }
    if !sessions.any {
        return Decision::Reboot;
    }
    match s.reboot_planned {
        None => Decision::Warn(now + WARNING),
        Some(t) if now >= t => Decision::Reboot,
        Some(_) => Decision::Wait,
    }
}

/// Runs until shutdown, looking again every [`TICK`] and at each status change.
pub async fn run(window: RebootWindow, status: StatusCell, mut shutdown: broadcast::Receiver<()>) {
    let mut rx = status.subscribe();
    loop {
        let s = status.get();
        if s.reboot_needed {
            step(&window, &status, &s).await;
        }
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            r = rx.changed() => if r.is_err() { return },
            _ = shutdown.recv() => return,
        }
    }
}

async fn step(window: &RebootWindow, status: &StatusCell, s: &AgentStatus) {
    let now = crate::status::unix_now();
    let local = jiff::Timestamp::from_second(now as i64)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_zoned(crate::timefmt::local_zone());
    let minute = local.hour() as u16 * 60 + local.minute() as u16;
    let sessions = match sessions().await {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!("auto_reboot: cannot ask logind who is logged in ({e}); not restarting");
            return;
        }
    };
    match decide(s, window, minute, sessions, now) {
        Decision::Nothing => status.update(|s| s.reboot_planned = None),
        Decision::Wait => {}
        Decision::Warn(at) => {
            tracing::info!(
                at,
                "auto_reboot: restart planned; logged-in users are warned"
            );
            status.update(|s| s.reboot_planned = Some(at));
        }
        Decision::Reboot => {
            tracing::info!("auto_reboot: restarting inside the reboot window");
            if let Err(e) = reboot().await {
                tracing::error!("auto_reboot: logind refused the restart: {e}");
            }
        }
    }
}

const LOGIN1: &str = "org.freedesktop.login1";

async fn sessions() -> zbus::Result<Sessions> {
    let conn = Connection::system().await?;
    let manager = Proxy::new(
        &conn,
        LOGIN1,
        "/org/freedesktop/login1",
        "org.freedesktop.login1.Manager",
    )
    .await?;
    let list: Vec<(String, u32, String, String, zbus::OwnedObjectPath)> =
        manager.call("ListSessions", &()).await?;
    let mut out = Sessions {
        any: !list.is_empty(),
        any_active: false,
    };
    for (_, _, _, _, path) in list {
        let session = Proxy::new(&conn, LOGIN1, path, "org.freedesktop.login1.Session").await?;
        if session.get_property::<bool>("Active").await.unwrap_or(true) {
            out.any_active = true;
        }
    }
    Ok(out)
}

async fn reboot() -> zbus::Result<()> {
    let conn = Connection::system().await?;
    conn.call_method(
        Some(LOGIN1),
        "/org/freedesktop/login1",
        Some("org.freedesktop.login1.Manager"),
        "Reboot",
        &(false,),
    )
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_only_in_the_window_never_over_an_active_session_and_warns_logged_in_users() {
        let w = RebootWindow::parse("02:00-05:00").unwrap();
        let needed = AgentStatus {
            reboot_needed: true,
            ..AgentStatus::default()
        };
        let nobody = Sessions {
            any: false,
            any_active: false,
        };
        let idle = Sessions {
            any: true,
            any_active: false,
        };
        let active = Sessions {
            any: true,
            any_active: true,
        };
        let now = 1_000;
        assert_eq!(decide(&needed, &w, 150, nobody, now), Decision::Reboot);
        assert_eq!(
            decide(&needed, &w, 60, nobody, now),
            Decision::Nothing,
            "outside"
        );
        assert_eq!(decide(&needed, &w, 150, active, now), Decision::Nothing);
        assert_eq!(
            decide(&AgentStatus::default(), &w, 150, nobody, now),
            Decision::Nothing
        );
        assert_eq!(
            decide(&needed, &w, 150, idle, now),
            Decision::Warn(now + WARNING)
        );
        let planned = AgentStatus {
            reboot_planned: Some(now + WARNING),
            ..needed.clone()
        };
        assert_eq!(decide(&planned, &w, 150, idle, now), Decision::Wait);
        assert_eq!(
            decide(&planned, &w, 155, idle, now + WARNING),
            Decision::Reboot
        );
    }
}
