//! Step 5 ("magic rollback"): after activation, the machine must still reach the server and pass
//! its health checks, all within `verify_timeout`. Both are retried until the deadline, because a
//! freshly activated network or service may need a moment.

use crate::config::AgentConfig;
use crate::runner::Runner;
use crate::source;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Pause between two tries.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// What a try cut off by the deadline says.
const NO_ANSWER: &str = "no answer from the server";

/// Verifies the running system; the error says what failed last (the server's last answer when
/// the deadline cut the last try short: "refused the key" says more than "no answer").
pub fn verify(config: &AgentConfig, runner: &Runner) -> Result<(), String> {
    let deadline = Instant::now() + config.verify_timeout;
    let mut answered: Option<String> = None;
    let mut last_error = loop {
        let err = match reconnect(config, deadline) {
            Ok(()) => break None,
            Err(e) => e,
        };
        if Instant::now() + RETRY_PAUSE >= deadline {
            break Some(match answered.take() {
                Some(a) if err == NO_ANSWER => format!("{a} (the last try got no answer)"),
                _ => err,
            });
        }
        if err != NO_ANSWER {
            answered = Some(err);
        }
        std::thread::sleep(RETRY_PAUSE);
    };
    if let Some(e) = last_error.take() {
        runner.note(&format!("verify: {e}"));
        return Err(format!(
            "cannot reach the server within {}: {e}",
            humantime::format_duration(config.verify_timeout)
        ));
    }
    runner.note("verify: the server is reachable");
    for check in &config.health_checks {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let out = runner
                .run(
                    "sh",
                    &["-c", check.as_str()],
                    Some(left.max(Duration::from_millis(1))),
                )
                .map_err(|e| format!("health check `{check}`: {e}"))?;
            if out.success() {
                break;
            }
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(format!("health check failed: {}", out.describe_failure()));
            }
            std::thread::sleep(RETRY_PAUSE);
        }
    }
    Ok(())
}

/// Opens a fresh connection to every configured source at once and reads `current`, each in a
/// thread so that a hanging connection cannot hold verification past its deadline: passes as
/// soon as any source answers (agent.toml `sources`).
fn reconnect(config: &AgentConfig, deadline: Instant) -> Result<(), String> {
    let (tx, rx) = mpsc::channel();
    for url in &config.sources {
        let (tx, c, url) = (tx.clone(), config.clone(), url.clone());
        std::thread::spawn(move || {
            let r = source::open(c.login(&url))
                .and_then(|mut s| s.current_generation())
                .map(|_| ())
                .map_err(|e| e.to_string());
            let _ = tx.send(r);
        });
    }
    drop(tx);
    let mut said = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => said.push(e),
            // Every source said no.
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err(said.join("; ")),
            Err(mpsc::RecvTimeoutError::Timeout) if said.is_empty() => return Err(NO_ANSWER.into()),
            Err(mpsc::RecvTimeoutError::Timeout) => return Err(said.join("; ")),
        }
    }
}
