//! What the walk-through waits for, on one channel: Enter, the agent's status events (a
//! subscription), the answers to the demo's own `check`/`update` calls, and SIGINT/SIGTERM/SIGHUP
//! (a small tokio runtime on its own thread). Every wait can be interrupted by a signal; the
//! cycles the walk-through starts, or someone else starts, are followed here.

use super::walkthrough::{Demo, CYCLE_LIMIT};
use crate::cli::client::{outcome_line, progress_line};
use crate::cycle::CycleReport;
use crate::ipc::{Client, CycleCall};
use crate::status::{unix_now, AgentStatus, Outcome, Phase};
use anyhow::{anyhow, Context};
use nix::sys::signal::Signal;
use std::io::BufRead;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

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

impl Demo {
    /// Forwards the agent's status events to the walk-through's channel.
    pub(super) fn start_watch(&self) {
        let socket = self.sandbox.socket();
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            let end = (|| -> Result<(), crate::ipc::ClientError> {
                let mut c = Client::connect(&socket)?;
                let first = c.subscribe()?;
                if tx.send(Event::Status(Box::new(first))).is_err() {
                    return Ok(());
                }
                loop {
                    let s = c.next_status()?;
                    if tx.send(Event::Status(Box::new(s))).is_err() {
                        return Ok(());
                    }
                }
            })();
            if let Err(e) = end {
                let _ = tx.send(Event::WatchLost(e.to_string()));
            }
        });
    }

    /// The agent's status asked now (not from the subscription, which may lag an answer).
    pub(super) fn fresh_status(&self) -> Option<AgentStatus> {
        let mut c = Client::connect(&self.sandbox.socket()).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        c.status().ok()
    }

    /// Sends `call` on its own connection; the answer arrives as [`Event::Answer`].
    pub(super) fn call(&self, call: CycleCall) {
        let socket = self.sandbox.socket();
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            let answer = Client::connect(&socket)
                .and_then(|mut c| c.cycle(call, &mut |_| {}))
                .map_err(|e| e.to_string());
            let _ = tx.send(Event::Answer(answer));
        });
    }

    /// The next event; a signal stops the walk-through, a status is remembered.
    pub(super) fn next(&mut self, timeout: Duration) -> Step<Option<Event>> {
        let ev = match self.rx.recv_timeout(timeout) {
            Ok(ev) => ev,
            Err(RecvTimeoutError::Timeout) => return Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                return Err(anyhow!("the demo's event channel closed").into())
            }
        };
        match ev {
            Event::Signal(sig) => Err(Stop::Signal(sig)),
            Event::Status(s) => {
                self.latest = Some((*s).clone());
                Ok(Some(Event::Status(s)))
            }
            Event::WatchLost(why) => Err(anyhow!(
                "lost the agent ({why}); its log:\n{}",
                self.agent_log_tail()
            )
            .into()),
            Event::InputClosed => {
                if self.input_open && self.waits {
                    say!("  (standard input is closed: the demo goes on without waiting)");
                }
                self.input_open = false;
                Ok(Some(Event::InputClosed))
            }
            other => Ok(Some(other)),
        }
    }

    /// Handles what has arrived without waiting (a signal stops here).
    pub(super) fn poll(&mut self) -> Step<()> {
        while self.next(Duration::ZERO)?.is_some() {}
        Ok(())
    }

    pub(super) fn waiting_for_user(&self) -> bool {
        self.waits && self.input_open
    }

    /// Waits for Enter (not under `--script`).
    pub(super) fn pause(&mut self, prompt: &str) -> Step<()> {
        self.poll()?;
        self.tray_running();
        if !self.waiting_for_user() {
            return Ok(());
        }
        say!("\n{prompt}");
        loop {
            match self.next(Duration::from_secs(3600))? {
                Some(Event::Enter) | Some(Event::InputClosed) => return Ok(()),
                _ => {}
            }
        }
    }

    /// `tiffin check`: the agent looks at the server; under policy notify it only tells.
    pub(super) fn check(&mut self, g: u64) -> Step<()> {
        say!("  The agent checks the server (`tiffin check`; it also checks every 10 minutes):");
        self.call(CycleCall::Check);
        let r = self.answer()?;
        if r.outcome == Outcome::Failed {
            return Err(anyhow!("the check failed: {}", outcome_line(&r)).into());
        }
        match self.fresh_status().and_then(|s| s.available_generation) {
            Some(a) if a == g => {
                say!("  generation {g} is available: the agent waits for a click.")
            }
            other => {
                return Err(anyhow!(
                    "after the check the agent offers generation {other:?}, not {g}"
                )
                .into())
            }
        }
        Ok(())
    }

    /// Waits for the answer to the call in flight.
    pub(super) fn answer(&mut self) -> Step<CycleReport> {
        let start = Instant::now();
        while start.elapsed() < CYCLE_LIMIT {
            if let Some(Event::Answer(r)) = self.next(Duration::from_millis(500))? {
                return r.map_err(|e| Stop::Failed(anyhow!("the agent: {e}")));
            }
        }
        Err(anyhow!(
            "the agent did not answer within {} s",
            CYCLE_LIMIT.as_secs()
        )
        .into())
    }

    /// Says how to apply generation `g`, waits for Enter or for someone else to start it (the
    /// tray, `tiffin update`, the HTTP trigger), follows the cycle and returns how it ended.
    pub(super) fn update_when_asked(&mut self, g: u64) -> Step<CycleReport> {
        let since = unix_now();
        let socket = self.sandbox.socket();
        if self.waiting_for_user() {
            say!();
            let update = format!("`{} update --socket {}`", self.tiffin, socket.display());
            if self.tray_running() {
                say!("  In the tray: the tiffin icon shows an update; open its menu and click \"Update now\".");
                say!("  Or run {update},");
            } else {
                say!("  Apply it: run {update},");
            }
            if let Some(addr) = self.http {
                say!("  or open http://{addr}/ in a browser,");
            }
            say!("  or press Enter here.");
        }
        let mut asked = false;
        if self.waiting_for_user() {
            loop {
                match self.next(Duration::from_secs(3600))? {
                    Some(Event::Enter) | Some(Event::InputClosed) => break,
                    Some(Event::Status(s)) if started(&s, g, since) => {
                        say!("  The agent started the update (asked by the tray, `tiffin update` or the HTTP trigger):");
                        asked = true;
                        break;
                    }
                    _ => {}
                }
            }
        }
        if !asked {
            say!("  The demo asks the agent to update (`tiffin update`):");
            self.call(CycleCall::Update);
        }
        self.follow(g, since)
    }

    /// Prints each phase of the cycle applying `g` until it has ended.
    pub(super) fn follow(&mut self, g: u64, since: u64) -> Step<CycleReport> {
        let start = Instant::now();
        let mut shown: Option<Phase> = None;
        let mut answer: Option<CycleReport> = None;
        let show = |s: &AgentStatus, shown: &mut Option<Phase>| {
            if s.phase != Phase::Idle && *shown != Some(s.phase) {
                say!(
                    "    {:>5.1} s  {}",
                    start.elapsed().as_secs_f64(),
                    progress_line(s)
                );
                *shown = Some(s.phase);
            }
        };
        if let Some(s) = self.latest.clone() {
            show(&s, &mut shown);
        }
        loop {
            if start.elapsed() > CYCLE_LIMIT {
                return Err(anyhow!(
                    "the update of generation {g} did not end within {} s",
                    CYCLE_LIMIT.as_secs()
                )
                .into());
            }
            match self.next(Duration::from_millis(500))? {
                Some(Event::Status(s)) => {
                    show(&s, &mut shown);
                    if let Some(r) = finished(&s, g, since) {
                        // Our own call's answer, when there is one, has the same content.
                        let r = answer.take().unwrap_or(r);
                        say!("  {}", outcome_line(&r));
                        return Ok(r);
                    }
                }
                Some(Event::Answer(Ok(r))) => answer = Some(r),
                Some(Event::Answer(Err(e))) => return Err(anyhow!("`update` failed: {e}").into()),
                _ => {}
            }
        }
    }
}

/// The cycle applying `g` is under way, or has ended, since `since`.
fn started(s: &AgentStatus, g: u64, since: u64) -> bool {
    s.phase.is_busy() || finished(s, g, since).is_some()
}

/// The end of the cycle that applied `g`, once the agent is idle again.
fn finished(s: &AgentStatus, g: u64, since: u64) -> Option<CycleReport> {
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
