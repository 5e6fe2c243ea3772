//! What the walk-through waits for, on one channel: Enter, the agent's status events (a
//! subscription), the answers to the demo's own `check`/`update` calls, and SIGINT/SIGTERM/SIGHUP
//! (a small tokio runtime on its own thread). Every wait can be interrupted by a signal; the
//! cycles the walk-through starts, or someone else starts, are followed here.

use crate::cycle::CycleReport;
use crate::status::{AgentStatus, Phase};
use anyhow::{anyhow, Context};
use nix::sys::signal::Signal;
use std::io::BufRead;
use std::sync::mpsc::{self, Sender};

/// Why the walk-through stopped early.
pub(super) enum Stop {
    Signal(Signal),
    Failed(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Stop {
    fn from(e: E) -> Self {
        Stop::Failed(e.into())
    }
}

pub(super) type Step<T> = Result<T, Stop>;

/// What the walk-through waits for.
pub(super) enum Event {
    /// The user pressed Enter.
    Enter,
    /// Standard input is closed: nobody will press Enter.
    InputClosed,
    Signal(Signal),
    Status(Box<AgentStatus>),
    /// The status subscription ended (the agent stopped).
    WatchLost(String),
    /// The answer to a `check` or `update` the demo asked for.
    Answer(Result<CycleReport, String>),
}

/// The cycle applying `g` is under way, or has ended, since `since`.
pub(super) fn started(s: &AgentStatus, g: u64, since: u64) -> bool {
    s.phase.is_busy() || finished(s, g, since).is_some()
}

/// The end of the cycle that applied `g`, once the agent is idle again.
pub(super) fn finished(s: &AgentStatus, g: u64, since: u64) -> Option<CycleReport> {
    let u = s.last_update.as_ref()?;
    (s.phase == Phase::Idle && u.generation == g && u.at >= since).then(|| CycleReport {
        outcome: u.outcome,
        generation: Some(u.generation),
        failed_step: u.failed_step,
        message: u.message.clone(),
    })
}

/// SIGINT, SIGTERM and SIGHUP become [`Event::Signal`]. Returns once the handlers are in place.
pub(super) fn watch_signals(tx: Sender<Event>) -> anyhow::Result<()> {
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    std::thread::Builder::new()
        .name("demo-signals".into())
        .spawn(move || {
            use tokio::signal::unix::{signal, SignalKind};
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            rt.block_on(async move {
                let streams = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                    signal(SignalKind::hangup()),
                );
                let (Ok(mut int), Ok(mut term), Ok(mut hup)) = streams else {
                    let _ = ready_tx.send(Err("cannot listen for signals".into()));
                    return;
                };
                let _ = ready_tx.send(Ok(()));
                loop {
                    let sig = tokio::select! {
                        _ = int.recv() => Signal::SIGINT,
                        _ = term.recv() => Signal::SIGTERM,
                        _ = hup.recv() => Signal::SIGHUP,
                    };
                    if tx.send(Event::Signal(sig)).is_err() {
                        return;
                    }
                }
            });
        })
        .context("starting the signal thread")?;
    ready_rx
        .recv()
        .map_err(|_| anyhow!("the signal thread ended"))?
        .map_err(|e| anyhow!("{e}"))
}

/// Each line on standard input is an [`Event::Enter`]; its end is [`Event::InputClosed`].
pub(super) fn read_enter_keys(tx: Sender<Event>) {
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            if line.is_err() || tx.send(Event::Enter).is_err() {
                break;
            }
        }
        let _ = tx.send(Event::InputClosed);
    });
}
