//! When the agent checks on its own: at start, then every `interval` plus a uniform random
//! `jitter` (so that a fleet does not hit the server at the same second), or sooner with a
//! doubling backoff while the server is unreachable.
//!
//! The due time is kept on the wall clock and re-read at least every [`MAX_SLEEP`]: tokio's
//! timers run on the monotonic clock, which stops while the machine sleeps, so a check missed
//! during suspend runs soon after waking instead of a whole interval late. The wait also ends
//! when the monotonic clock has run the whole delay, so a wall clock set back (NTP, an admin)
//! does not put the next check off by as much as it went back.

use super::status_cell::StatusCell;
use super::worker::{Work, WorkerHandle};
use crate::config::AgentConfig;
use crate::cycle::CycleRequest;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

/// The longest the scheduler sleeps without looking at the wall clock.
pub const MAX_SLEEP: Duration = Duration::from_secs(60);
/// The first wait after an unreachable server.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    pub interval: Duration,
    pub jitter: Duration,
}

impl Schedule {
    pub fn from_config(c: &AgentConfig) -> Self {
        Self {
            interval: c.interval,
            jitter: c.jitter,
        }
    }

    /// The wait after a check. `backoff` carries the last backoff between calls.
    pub fn next_delay(
        &self,
        server_unreachable: bool,
        backoff: &mut Option<Duration>,
        rng: &mut Jitter,
    ) -> Duration {
        if server_unreachable {
            let next = match *backoff {
                None => FIRST_BACKOFF,
                Some(b) => b.saturating_mul(2),
            }
            .min(self.interval);
            *backoff = Some(next);
            // Up to half again at random: agents that failed together (a restarted server, an
            // sshd at MaxStartups) must not all come back in the same second.
            return next + rng.up_to(next / 2);
        }
        *backoff = None;
        self.interval + rng.up_to(self.jitter)
    }
}

/// The jitter's random source (`fastrand`): jitter needs spread, not secrecy.
pub struct Jitter(fastrand::Rng);

impl Jitter {
    /// Seeded by `fastrand` from the process's random state, so machines started together still
    /// spread.
    pub fn seeded() -> Self {
        Self(fastrand::Rng::new())
    }

    pub fn from_seed(seed: u64) -> Self {
        Self(fastrand::Rng::with_seed(seed))
    }

    /// Uniform in `0..=max` at millisecond resolution.
    pub fn up_to(&mut self, max: Duration) -> Duration {
        let ms = max.as_millis() as u64;
        Duration::from_millis(self.0.u64(0..=ms))
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Sleeps until the wall clock reaches `due` or `delay` has passed on the monotonic clock,
/// whichever comes first, in slices of at most [`MAX_SLEEP`]. Returns false when shutdown was
/// asked for.
async fn sleep_until_wall(
    due: SystemTime,
    delay: Duration,
    shutdown: &mut broadcast::Receiver<()>,
) -> bool {
    sleep_until_wall_by(due, delay, SystemTime::now, shutdown).await
}

/// [`sleep_until_wall`] with the wall clock passed in (tests move it as a suspend or a clock
/// change would).
async fn sleep_until_wall_by(
    due: SystemTime,
    delay: Duration,
    wall_clock: impl Fn() -> SystemTime,
    shutdown: &mut broadcast::Receiver<()>,
) -> bool {
    let mono_due = tokio::time::Instant::now() + delay;
    loop {
        let Ok(left) = due.duration_since(wall_clock()) else {
            return true;
        };
        let mono_left = mono_due.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() || mono_left.is_zero() {
            return true;
        }
        tokio::select! {
            () = tokio::time::sleep(left.min(mono_left).min(MAX_SLEEP)) => {}
            _ = shutdown.recv() => return false,
        }
    }
}

/// Runs the schedule until shutdown: a check at start, then one per interval, each once `gate`
/// allows an automatic run (on mains power, not metered: `agent::conditions`).
pub async fn run(
    schedule: Schedule,
    worker: WorkerHandle,
    status: StatusCell,
    mut gate: crate::agent::conditions::Gate,
    mut shutdown: broadcast::Receiver<()>,
) {
    let mut rng = Jitter::seeded();
    let mut backoff = None;
    let mut delay = Duration::ZERO;
    loop {
        let due = SystemTime::now() + delay;
        status.update(|s| s.next_check = Some(unix_secs(due)));
        if !sleep_until_wall(due, delay, &mut shutdown).await {
            return;
        }
        let say = |w: &[crate::status::Waiting]| {
            if !w.is_empty() {
                tracing::info!(waiting_for = ?w, "the automatic update waits");
            }
            status.update(|s| s.waiting_for = w.to_vec());
        };
        if !gate.until_allowed(say, &mut shutdown).await {
            return;
        }
        if worker
            .request(Work::Cycle(CycleRequest::Scheduled))
            .await
            .is_err()
        {
            return;
        }
        let unreachable = status.get().server_reachable == Some(false);
        delay = schedule.next_delay(unreachable, &mut backoff, &mut rng);
        if unreachable {
            tracing::info!(retry_in = ?delay, "server unreachable; backing off");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_bounds_and_spreads() {
        let mut rng = Jitter::from_seed(42);
        let max = Duration::from_secs(120);
        let draws: Vec<_> = (0..1000).map(|_| rng.up_to(max)).collect();
        assert!(draws.iter().all(|d| *d <= max));
        assert!(draws.iter().any(|d| *d < Duration::from_secs(30)));
        assert!(draws.iter().any(|d| *d > Duration::from_secs(90)));
    }

    #[test]
    fn backoff_doubles_up_to_the_interval_and_resets_on_contact() {
        let s = Schedule {
            interval: Duration::from_secs(300),
            jitter: Duration::ZERO,
        };
        let mut rng = Jitter::from_seed(1);
        let mut b = None;
        let bases = [30u64, 60, 120, 240, 300, 300];
        for base in bases {
            let wait = s.next_delay(true, &mut b, &mut rng).as_secs();
            assert!(
                (base..=base + base / 2).contains(&wait),
                "{wait} s outside {base}..={}",
                base + base / 2
            );
            assert_eq!(b, Some(Duration::from_secs(base)));
        }
        assert_eq!(s.next_delay(false, &mut b, &mut rng).as_secs(), 300);
        assert_eq!(b, None);
        let again = s.next_delay(true, &mut b, &mut rng).as_secs();
        assert!((30..=45).contains(&again), "{again}");
    }

    #[test]
    fn agents_that_failed_together_do_not_retry_in_the_same_second() {
        let s = Schedule {
            interval: Duration::from_secs(900),
            jitter: Duration::ZERO,
        };
        let firsts: std::collections::BTreeSet<u64> = (1..=200u64)
            .map(|seed| {
                let mut rng = Jitter::from_seed(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                s.next_delay(true, &mut None, &mut rng).as_secs()
            })
            .collect();
        // 200 agents spread over the 16 seconds of 30..=45 s.
        assert!(firsts.len() >= 12, "{firsts:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_missed_during_suspend_runs_within_one_slice_after_waking() {
        // The check is due in 15 minutes; after the first slice of monotonic sleep the wall
        // clock has jumped 2 hours ahead (the machine slept).
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mono_start = tokio::time::Instant::now();
        let clock = move || {
            let slept = mono_start.elapsed();
            if slept >= MAX_SLEEP {
                start + slept + Duration::from_secs(7200)
            } else {
                start + slept
            }
        };
        let (_tx, mut rx) = broadcast::channel(1);
        let delay = Duration::from_secs(15 * 60);
        assert!(sleep_until_wall_by(start + delay, delay, clock, &mut rx).await);
        // Virtual time under a paused clock: deterministic, not a timing measurement.
        assert_eq!(mono_start.elapsed(), MAX_SLEEP);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_suspend_the_wait_is_the_whole_interval() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mono_start = tokio::time::Instant::now();
        let clock = move || start + mono_start.elapsed();
        let (_tx, mut rx) = broadcast::channel(1);
        let delay = Duration::from_secs(900);
        assert!(sleep_until_wall_by(start + delay, delay, clock, &mut rx).await);
        assert_eq!(mono_start.elapsed(), Duration::from_secs(900));
    }

    #[tokio::test]
    async fn a_due_time_already_past_returns_at_once() {
        let (_tx, mut rx) = broadcast::channel(1);
        let past = SystemTime::now() - Duration::from_secs(3600);
        assert!(sleep_until_wall(past, Duration::from_secs(3600), &mut rx).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wall_clock_set_back_does_not_put_the_check_off() {
        // The check is due in 15 minutes; one minute in, the wall clock is set back 2 hours.
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mono_start = tokio::time::Instant::now();
        let clock = move || {
            let slept = mono_start.elapsed();
            if slept >= MAX_SLEEP {
                start + slept - Duration::from_secs(7200)
            } else {
                start + slept
            }
        };
        let (_tx, mut rx) = broadcast::channel(1);
        let delay = Duration::from_secs(15 * 60);
        assert!(sleep_until_wall_by(start + delay, delay, clock, &mut rx).await);
        // Virtual time: the wait is the interval, not the interval plus two hours.
        assert_eq!(mono_start.elapsed(), delay);
    }
}
