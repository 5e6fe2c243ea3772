//! A blocking client of the agent's socket, for the CLI, the tray and the demo.
//!
//! Every answer comes back typed: [`AgentStatus`] for `status` and `subscribe`, a [`CycleReport`]
//! for `check`, `update` and `rollback`, `Option<String>` for `log`. The JSON of the protocol
//! stays in this module; a caller never sees a `serde_json::Value`.

use super::codec::encode;
use super::protocol::{Command, Event, Request, Response, WireError, MAX_LINE, PROTOCOL_VERSION};
use super::report::{log_from_value, report_from_value};
use crate::cycle::CycleReport;
use crate::status::AgentStatus;
use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    // `error` is part of the message rather than a `source`, so that it is not printed twice.
    #[error("cannot connect to the agent at {path}: {error} (is `tiffin agent` running, and are you in its socket group?)")]
    Connect { path: PathBuf, error: io::Error },
    #[error("agent connection: {0}")]
    Io(#[from] io::Error),
    #[error("the agent closed the connection")]
    Closed,
    #[error("the agent sent something unreadable: {0}")]
    Protocol(String),
    #[error("the agent refused: {} ({:?})", .0.message, .0.code)]
    Agent(WireError),
}

/// The calls that run a cycle (or a rollback) and answer with its report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CycleCall {
    Check,
    Update,
    Rollback,
}

impl CycleCall {
    fn command(self) -> Command {
        match self {
            CycleCall::Check => Command::Check,
            CycleCall::Update => Command::Update,
            CycleCall::Rollback => Command::Rollback,
        }
    }
}

/// What arrives on a connection: an answer to a request, or an event after `subscribe`.
#[derive(Debug)]
enum Incoming {
    Response(Response),
    Event(Box<Event>),
}

/// Statuses kept for [`Client::next_status`] while a call waits for its answer; older ones are
/// dropped first (only the latest status matters).
const MAX_PENDING: usize = 256;

pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
    /// Statuses that arrived while waiting for an answer, oldest first.
    pending: VecDeque<AgentStatus>,
    /// The `until` of the next request sent (`postpone`).
    until: Option<u64>,
}

impl Client {
    /// Connects to the agent's socket.
    pub fn connect(path: &Path) -> Result<Self, ClientError> {
        let s = UnixStream::connect(path).map_err(|error| ClientError::Connect {
            path: path.to_path_buf(),
            error,
        })?;
        Self::from_stream(s)
    }

    fn from_stream(s: UnixStream) -> Result<Self, ClientError> {
        let writer = s.try_clone()?;
        Ok(Self {
            reader: BufReader::new(s),
            writer,
            next_id: 1,
            pending: VecDeque::new(),
            until: None,
        })
    }

    /// Bounds how long a read waits (None: forever).
    pub fn set_read_timeout(&self, t: Option<Duration>) -> Result<(), ClientError> {
        self.writer.set_read_timeout(t)?;
        Ok(())
    }

    /// The agent's current status.
    pub fn status(&mut self) -> Result<AgentStatus, ClientError> {
        let data = self.call(Command::Status, None)?;
        decode_status(data)
    }

    /// `check`: look for a new generation and fetch it, never apply.
    pub fn check(&mut self) -> Result<CycleReport, ClientError> {
        self.plain_cycle(CycleCall::Check)
    }

    /// `update`: apply the newest generation now.
    pub fn update(&mut self) -> Result<CycleReport, ClientError> {
        self.plain_cycle(CycleCall::Update)
    }

    /// `postpone`: no reminder of the waiting update before `until` (Unix seconds); refused
    /// past the admin's deadline, with the deadline in the message.
    pub fn postpone(&mut self, until: u64) -> Result<crate::status::Postponed, ClientError> {
        self.until = Some(until);
        let data = self.call(Command::Postpone, None)?;
        serde_json::from_value(data)
            .map_err(|e| ClientError::Protocol(format!("bad postpone answer: {e}")))
    }

    /// `rollback`: go back to the previous system.
    pub fn rollback(&mut self) -> Result<CycleReport, ClientError> {
        self.plain_cycle(CycleCall::Rollback)
    }

    /// Runs `call` and waits for its report. After [`Client::subscribe`] on this connection, the
    /// statuses the cycle goes through are passed to `on_status` as they arrive.
    pub fn cycle(
        &mut self,
        call: CycleCall,
        on_status: &mut dyn FnMut(AgentStatus),
    ) -> Result<CycleReport, ClientError> {
        let data = self.call(call.command(), Some(on_status))?;
        report_from_value(data).map_err(ClientError::Protocol)
    }

    fn plain_cycle(&mut self, call: CycleCall) -> Result<CycleReport, ClientError> {
        let data = self.call(call.command(), None)?;
        report_from_value(data).map_err(ClientError::Protocol)
    }

    /// The log of the agent's last cycle; `None` before the first one.
    pub fn log(&mut self) -> Result<Option<String>, ClientError> {
        let data = self.call(Command::Log, None)?;
        log_from_value(data).map_err(ClientError::Protocol)
    }

    /// Subscribes to the agent's status: returns the status now; every later change arrives
    /// through [`Client::next_status`].
    pub fn subscribe(&mut self) -> Result<AgentStatus, ClientError> {
        let data = self.call(Command::Subscribe, None)?;
        if data.is_null() {
            // An agent whose answer to `subscribe` carries no status: ask for it (after
            // subscribing, so that no change in between is missed).
            return self.status();
        }
        decode_status(data)
    }

    /// The next status after [`Client::subscribe`]: one that arrived during a call, else the
    /// next event (blocking, within the read timeout).
    pub fn next_status(&mut self) -> Result<AgentStatus, ClientError> {
        if let Some(s) = self.pending.pop_front() {
            return Ok(s);
        }
        loop {
            if let Incoming::Event(e) = self.read_incoming()? {
                let Event::Status(s) = *e;
                return Ok(s);
            }
        }
    }

    /// Subscribes and yields the status now, then every change; after an error the iterator
    /// yields that error and ends.
    pub fn watch(mut self) -> impl Iterator<Item = Result<AgentStatus, ClientError>> {
        let mut first = Some(self.subscribe());
        let mut failed = false;
        std::iter::from_fn(move || {
            if failed {
                return None;
            }
            let next = first.take().unwrap_or_else(|| self.next_status());
            failed = next.is_err();
            Some(next)
        })
    }

    /// Sends a request; returns its id.
    fn send(&mut self, cmd: Command) -> Result<u64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let line = encode(&Request {
            id,
            cmd,
            v: PROTOCOL_VERSION,
            until: self.until.take(),
        });
        self.writer.write_all(&line)?;
        Ok(id)
    }

    /// Reads the next line: an answer or an event.
    fn read_incoming(&mut self) -> Result<Incoming, ClientError> {
        let mut line = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_LINE as u64 * 64)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Err(ClientError::Closed);
        }
        decode_line(&line)
    }

    /// Sends a request and waits for its answer's data; statuses that arrive meanwhile are
    /// passed to `on_status`, or without one kept for [`Client::next_status`].
    fn call(
        &mut self,
        cmd: Command,
        mut on_status: Option<&mut dyn FnMut(AgentStatus)>,
    ) -> Result<serde_json::Value, ClientError> {
        let id = self.send(cmd)?;
        loop {
            match self.read_incoming()? {
                Incoming::Event(e) => {
                    let Event::Status(s) = *e;
                    match on_status.as_mut() {
                        Some(f) => f(s),
                        None => {
                            if self.pending.len() == MAX_PENDING {
                                self.pending.pop_front();
                            }
                            self.pending.push_back(s);
                        }
                    }
                }
                Incoming::Response(r) if r.id == id => return answer_data(r),
                Incoming::Response(_) => {}
            }
        }
    }
}

/// One line from the agent: an event (it has an `event` field) or an answer.
fn decode_line(line: &[u8]) -> Result<Incoming, ClientError> {
    let v: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| ClientError::Protocol(e.to_string()))?;
    if v.get("event").is_some() {
        serde_json::from_value(v)
            .map(|e| Incoming::Event(Box::new(e)))
            .map_err(|e| ClientError::Protocol(format!("bad event: {e}")))
    } else {
        serde_json::from_value(v)
            .map(Incoming::Response)
            .map_err(|e| ClientError::Protocol(format!("bad answer: {e}")))
    }
}

/// The data of a successful answer (null when it has none), or the agent's refusal.
fn answer_data(r: Response) -> Result<serde_json::Value, ClientError> {
    match (r.ok, r.error) {
        (true, _) => Ok(r.data.unwrap_or(serde_json::Value::Null)),
        (false, Some(e)) => Err(ClientError::Agent(e)),
        (false, None) => Err(ClientError::Protocol(
            "an error answer without details".into(),
        )),
    }
}

fn decode_status(data: serde_json::Value) -> Result<AgentStatus, ClientError> {
    serde_json::from_value(data).map_err(|e| ClientError::Protocol(format!("bad status: {e}")))
}

mod backup;

#[cfg(test)]
mod tests;
