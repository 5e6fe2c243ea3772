//! A blocking client of the agent's socket, for the CLI and the tray.

use super::codec::encode;
use super::protocol::{Command, Event, Request, Response, WireError, MAX_LINE, PROTOCOL_VERSION};
use crate::status::AgentStatus;
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

/// What arrives on a connection: an answer to a request, or an event after `subscribe`.
#[derive(Debug)]
pub enum Incoming {
    Response(Response),
    Event(Box<Event>),
}

pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl Client {
    /// Connects to the agent's socket.
    pub fn connect(path: &Path) -> Result<Self, ClientError> {
        let s = UnixStream::connect(path).map_err(|error| ClientError::Connect {
            path: path.to_path_buf(),
            error,
        })?;
        let writer = s.try_clone()?;
        Ok(Self {
            reader: BufReader::new(s),
            writer,
            next_id: 1,
        })
    }

    /// Bounds how long a read waits (None: forever).
    pub fn set_read_timeout(&self, t: Option<Duration>) -> Result<(), ClientError> {
        self.writer.set_read_timeout(t)?;
        Ok(())
    }

    /// Sends a request without waiting; returns its id.
    pub fn send(&mut self, cmd: Command) -> Result<u64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let line = encode(&Request {
            id,
            cmd,
            v: PROTOCOL_VERSION,
        });
        self.writer.write_all(&line)?;
        Ok(id)
    }

    /// Reads the next line: an answer or an event.
    pub fn read_incoming(&mut self) -> Result<Incoming, ClientError> {
        let mut line = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_LINE as u64 * 64)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Err(ClientError::Closed);
        }
        let v: serde_json::Value =
            serde_json::from_slice(&line).map_err(|e| ClientError::Protocol(e.to_string()))?;
        if v.get("event").is_some() {
            serde_json::from_value(v)
                .map(|e| Incoming::Event(Box::new(e)))
                .map_err(|e| ClientError::Protocol(e.to_string()))
        } else {
            serde_json::from_value(v)
                .map(Incoming::Response)
                .map_err(|e| ClientError::Protocol(e.to_string()))
        }
    }

    /// Sends a request and waits for its answer; events that arrive meanwhile are passed to
    /// `on_event`.
    pub fn call_with(
        &mut self,
        cmd: Command,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<serde_json::Value, ClientError> {
        let id = self.send(cmd)?;
        loop {
            match self.read_incoming()? {
                Incoming::Event(e) => on_event(*e),
                Incoming::Response(r) if r.id == id => {
                    return match (r.ok, r.error) {
                        (true, _) => Ok(r.data.unwrap_or(serde_json::Value::Null)),
                        (false, Some(e)) => Err(ClientError::Agent(e)),
                        (false, None) => Err(ClientError::Protocol("error without details".into())),
                    }
                }
                Incoming::Response(_) => {}
            }
        }
    }

    /// Sends a request and waits for its answer, ignoring events.
    pub fn call(&mut self, cmd: Command) -> Result<serde_json::Value, ClientError> {
        self.call_with(cmd, &mut |_| {})
    }

    /// The agent's current status.
    pub fn status(&mut self) -> Result<AgentStatus, ClientError> {
        let v = self.call(Command::Status)?;
        serde_json::from_value(v).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Waits for the next event, skipping stray answers.
    pub fn next_event(&mut self) -> Result<Event, ClientError> {
        loop {
            if let Incoming::Event(e) = self.read_incoming()? {
                return Ok(*e);
            }
        }
    }
}
