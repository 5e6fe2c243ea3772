//! What the daemon's worker is asked for ([`Work`]) and the handle everything asks through
//! ([`WorkerHandle`]): the socket server, the scheduler and the HTTP trigger. Its own module so
//! that they depend on it, not on the daemon that starts them.

use crate::cycle::{CycleReport, CycleRequest};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// What the worker does for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    Cycle(CycleRequest),
    Rollback,
}

impl Work {
    /// How much a cycle does, to merge queued cycles into the one that does the most.
    pub(super) fn weight(self) -> u8 {
        match self {
            Work::Cycle(CycleRequest::Check) => 1,
            Work::Cycle(CycleRequest::Scheduled) => 2,
            Work::Cycle(CycleRequest::Update) => 3,
            Work::Cycle(CycleRequest::Retry) => 4,
            Work::Rollback => 0,
        }
    }
}

pub(super) struct Job {
    pub(super) work: Work,
    pub(super) reply: Option<oneshot::Sender<CycleReport>>,
}

/// The worker has stopped (the agent is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the agent is shutting down")]
pub struct WorkerGone;

/// The handle through which everything asks for cycles.
#[derive(Clone)]
pub struct WorkerHandle {
    pub(super) tx: mpsc::Sender<Job>,
    /// The last cycle's log, readable while the runner is busy in the next one.
    pub(super) last_log: Arc<Mutex<Option<String>>>,
}

impl WorkerHandle {
    /// Asks for `work` and waits until the cycle that serves it has finished.
    pub async fn request(&self, work: Work) -> Result<CycleReport, WorkerGone> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                work,
                reply: Some(reply),
            })
            .await
            .map_err(|_| WorkerGone)?;
        rx.await.map_err(|_| WorkerGone)
    }

    /// The log of the last cycle, if one ran.
    pub fn last_log(&self) -> Option<String> {
        self.last_log.lock().ok().and_then(|l| l.clone())
    }

    /// Asks for `work` without waiting for it.
    pub fn trigger(&self, work: Work) -> Result<(), WorkerGone> {
        self.tx
            .try_send(Job { work, reply: None })
            .map_err(|_| WorkerGone)
    }
}
