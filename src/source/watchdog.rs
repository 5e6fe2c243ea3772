//! A deadline and a minimum rate for one SFTP session, so that a server that trickles bytes
//! cannot hold the agent's worker (and an admin's rollback queued behind it) for hours.
//!
//! libssh2's own timeout only limits each wait for the socket: one byte every few seconds
//! resets it. The watchdog instead looks at the session from outside. While a request is in
//! flight ([`Watchdog::busy`]), at least [`TransferLimits::min_bytes`] must reach the agent in
//! every [`TransferLimits::window`], and the time spent waiting for the server over the whole
//! session (connection, every request, every download) may not pass
//! [`TransferLimits::deadline`]. Otherwise the watchdog shuts the TCP socket down, which ends
//! whatever libssh2 was waiting for, and every later request fails at once with the reason.

use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// How long, and how slowly, one session may wait for the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransferLimits {
    /// The time a session may spend waiting for the server, in total. Time between requests
    /// (while the agent builds, say) does not count.
    pub deadline: Duration,
    /// While a request is in flight, at least this many bytes must arrive in every `window`
    /// (or the request must end within it). 0 turns the rate check off.
    pub min_bytes: u64,
    pub window: Duration,
}

/// What the agent uses: 30 minutes in all, and 16 KiB per minute while waiting. Bytes are
/// counted as libssh2 hands them over, up to ~30 KB per SFTP read, so in effect a download must
/// keep up about 500 bytes a second; uploads are counted per 8 KiB the server takes.
pub const TRANSFER_LIMITS: TransferLimits = TransferLimits {
    deadline: Duration::from_secs(30 * 60),
    min_bytes: 16 * 1024,
    window: Duration::from_secs(60),
};

/// The longest the watchdog sleeps between two looks.
const TICK: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct State {
    /// Since when a request is in flight.
    busy_since: Option<Instant>,
    /// Time spent in requests that ended.
    busy_before: Duration,
    /// The current rate window: its start and the bytes that arrived in it.
    window_start: Instant,
    window_bytes: u64,
    /// Why the session was cut.
    cut: Option<String>,
    /// The session is gone: the watchdog thread ends.
    closed: bool,
}

/// Why the session must be cut now, if it must; moves the rate window on when it is full.
fn verdict(s: &mut State, limits: &TransferLimits, now: Instant) -> Option<String> {
    let since = s.busy_since?;
    let used = s.busy_before + now.saturating_duration_since(since);
    if used > limits.deadline {
        return Some(format!(
            "cut after waiting {} for the server this cycle, more than the {} allowed",
            humantime::format_duration(round(used)),
            humantime::format_duration(limits.deadline)
        ));
    }
    if now.saturating_duration_since(s.window_start) >= limits.window {
        if s.window_bytes < limits.min_bytes {
            return Some(format!(
                "cut: the server sent {} bytes in {}, less than the minimum of {} bytes per {} (too slow, or trickling on purpose)",
                s.window_bytes,
                humantime::format_duration(limits.window),
                limits.min_bytes,
                humantime::format_duration(limits.window)
            ));
        }
        s.window_start = now;
        s.window_bytes = 0;
    }
    None
}

fn round(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// Watches one session; dropping it ends its thread.
pub struct Watchdog {
    state: Arc<Mutex<State>>,
}

impl Watchdog {
    /// Starts watching the session on `socket` (a clone of the session's TCP stream).
    pub fn start(socket: TcpStream, limits: TransferLimits) -> Self {
        let state = Arc::new(Mutex::new(State {
            busy_since: None,
            busy_before: Duration::ZERO,
            window_start: Instant::now(),
            window_bytes: 0,
            cut: None,
            closed: false,
        }));
        let shared = state.clone();
        let tick = TICK.min(limits.window / 10).max(Duration::from_millis(5));
        let spawned = thread::Builder::new()
            .name("sftp watchdog".into())
            .spawn(move || loop {
                thread::sleep(tick);
                let mut s = lock(&shared);
                if s.closed || s.cut.is_some() {
                    return;
                }
                if let Some(why) = verdict(&mut s, &limits, Instant::now()) {
                    tracing::warn!("{why}");
                    s.cut = Some(why);
                    let _ = socket.shutdown(Shutdown::Both);
                    return;
                }
            });
        if let Err(e) = spawned {
            // Without the thread the session keeps libssh2's per-wait timeout only.
            tracing::warn!("cannot start the SFTP watchdog: {e}");
        }
        Self { state }
    }

    /// Marks a request in flight until the returned guard is dropped.
    pub fn busy(&self) -> Busy {
        let mut s = lock(&self.state);
        let now = Instant::now();
        s.busy_since = Some(now);
        s.window_start = now;
        s.window_bytes = 0;
        Busy(self.state.clone())
    }

    /// A handle that counts the bytes of a download or upload as they pass.
    pub fn meter(&self) -> Meter {
        Meter(self.state.clone())
    }

    /// Why the session was cut, if it was.
    pub fn cut(&self) -> Option<String> {
        lock(&self.state).cut.clone()
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        lock(&self.state).closed = true;
    }
}

/// A request in flight; see [`Watchdog::busy`].
pub struct Busy(Arc<Mutex<State>>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut s = lock(&self.0);
        if let Some(since) = s.busy_since.take() {
            s.busy_before += since.elapsed();
        }
    }
}

/// Counts bytes for the rate check; see [`Watchdog::meter`].
#[derive(Clone)]
pub struct Meter(Arc<Mutex<State>>);

impl Meter {
    /// `bytes` arrived (or the server took them).
    pub fn progress(&self, bytes: u64) {
        let mut s = lock(&self.0);
        s.window_bytes = s.window_bytes.saturating_add(bytes);
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: TransferLimits = TransferLimits {
        deadline: Duration::from_secs(10),
        min_bytes: 100,
        window: Duration::from_secs(1),
    };

    fn state(t0: Instant) -> State {
        State {
            busy_since: Some(t0),
            busy_before: Duration::ZERO,
            window_start: t0,
            window_bytes: 0,
            cut: None,
            closed: false,
        }
    }

    #[test]
    fn a_window_with_too_few_bytes_cuts_and_a_full_one_moves_on() {
        let t0 = Instant::now();
        let mut s = state(t0);
        s.window_bytes = 99;
        assert!(verdict(&mut s, &LIMITS, t0 + Duration::from_millis(900)).is_none());
        let why = verdict(&mut s, &LIMITS, t0 + Duration::from_secs(1)).expect("cut");
        assert!(
            why.contains("99 bytes in 1s") && why.contains("100 bytes per 1s"),
            "{why}"
        );

        let mut s = state(t0);
        s.window_bytes = 100;
        assert!(verdict(&mut s, &LIMITS, t0 + Duration::from_secs(1)).is_none());
        assert_eq!(
            (s.window_start, s.window_bytes),
            (t0 + Duration::from_secs(1), 0)
        );
        assert!(verdict(&mut s, &LIMITS, t0 + Duration::from_secs(2)).is_some());
    }

    #[test]
    fn idle_time_between_requests_counts_for_neither_rate_nor_deadline() {
        let t0 = Instant::now();
        let mut s = state(t0);
        s.busy_since = None;
        s.busy_before = Duration::from_secs(9);
        assert!(verdict(&mut s, &LIMITS, t0 + Duration::from_secs(3600)).is_none());
    }

    #[test]
    fn the_deadline_counts_every_request_of_the_session() {
        let t0 = Instant::now();
        let mut s = state(t0);
        s.busy_before = Duration::from_secs(9);
        s.window_bytes = 1_000_000;
        let why = verdict(&mut s, &LIMITS, t0 + Duration::from_millis(1500)).expect("cut");
        assert!(why.contains("10s allowed"), "{why}");
    }

    #[test]
    fn min_bytes_zero_turns_the_rate_check_off() {
        let t0 = Instant::now();
        let mut s = state(t0);
        let limits = TransferLimits {
            min_bytes: 0,
            ..LIMITS
        };
        assert!(verdict(&mut s, &limits, t0 + Duration::from_secs(5)).is_none());
    }
}
