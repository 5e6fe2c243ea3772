//! The worker: the one task that owns the [`CycleRunner`] and runs its cycles one at a time,
//! merging the requests that arrive meanwhile.

use super::status_cell::StatusCell;
use crate::agent::cycle::CycleRunner;
use crate::cycle::{CycleReport, CycleRequest};
use crate::status::Outcome;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc, oneshot};

/// What the worker does for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    Cycle(CycleRequest),
    Rollback,
}

impl Work {
    /// How much a cycle does, to merge queued cycles into the one that does the most.
    fn weight(self) -> u8 {
        match self {
            Work::Cycle(CycleRequest::Check) => 1,
            Work::Cycle(CycleRequest::Scheduled) => 2,
            Work::Cycle(CycleRequest::Update) => 3,
            Work::Cycle(CycleRequest::Retry) => 4,
            Work::Rollback => 0,
        }
    }
}

struct Job {
    work: Work,
    reply: Option<oneshot::Sender<CycleReport>>,
}

/// The worker has stopped (the agent is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the agent is shutting down")]
pub struct WorkerGone;

/// The handle through which everything asks for cycles.
#[derive(Clone)]
pub struct WorkerHandle {
    tx: mpsc::Sender<Job>,
    /// The last cycle's log, readable while the runner is busy in the next one.
    last_log: Arc<Mutex<Option<String>>>,
    /// Held by every cycle while it runs, and by a backup: the two never overlap.
    exclusive: Arc<tokio::sync::Mutex<()>>,
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

    /// The lock every cycle holds while it runs: a backup takes it too, so that it never runs
    /// during an update cycle (and a cycle waits for a backup in progress).
    pub fn exclusive(&self) -> Arc<tokio::sync::Mutex<()>> {
        self.exclusive.clone()
    }

    /// Asks for `work` without waiting for it.
    pub fn trigger(&self, work: Work) -> Result<(), WorkerGone> {
        self.tx
            .try_send(Job { work, reply: None })
            .map_err(|_| WorkerGone)
    }
}

/// A unit of work and everyone waiting for it.
struct Batch {
    work: Work,
    waiters: Vec<oneshot::Sender<CycleReport>>,
}

/// Owns the runner; runs one batch at a time.
///
/// While a cycle runs: a `check` or a scheduled check joins it (any cycle looks at the server);
/// an `update` joins a running update, and otherwise waits as the next cycle, into which every
/// further request coalesces; a rollback waits for its own turn after the queued cycle.
pub struct Worker {
    runner: Option<Box<dyn CycleRunner>>,
    status: StatusCell,
    last_log: Arc<Mutex<Option<String>>>,
    rx: mpsc::Receiver<Job>,
    shutdown: broadcast::Receiver<()>,
    cycles_started: u64,
    exclusive: Arc<tokio::sync::Mutex<()>>,
}

impl Worker {
    /// Starts the worker task.
    pub fn start(
        runner: Box<dyn CycleRunner>,
        status: StatusCell,
        shutdown: broadcast::Receiver<()>,
    ) -> (WorkerHandle, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(64);
        let last_log = Arc::new(Mutex::new(runner.last_log()));
        let exclusive = Arc::new(tokio::sync::Mutex::new(()));
        let worker = Worker {
            runner: Some(runner),
            status,
            last_log: last_log.clone(),
            rx,
            shutdown,
            cycles_started: 0,
            exclusive: exclusive.clone(),
        };
        let handle = WorkerHandle {
            tx,
            last_log,
            exclusive,
        };
        (handle, tokio::spawn(worker.run()))
    }

    async fn run(mut self) {
        let mut queue: VecDeque<Batch> = VecDeque::new();
        loop {
            let batch = match queue.pop_front() {
                Some(b) => b,
                None => tokio::select! {
                    job = self.rx.recv() => match job {
                        Some(j) => Batch { work: j.work, waiters: j.reply.into_iter().collect() },
                        None => return,
                    },
                    _ = self.shutdown.recv() => return,
                },
            };
            let stopping = self.run_batch(batch, &mut queue).await;
            if stopping || self.runner.is_none() {
                // Queued requests are dropped: their callers learn that the agent stops.
                return;
            }
        }
    }

    /// Runs one batch, merging requests that arrive meanwhile. Returns true when shutdown was
    /// asked for during the batch.
    async fn run_batch(&mut self, mut current: Batch, queue: &mut VecDeque<Batch>) -> bool {
        let Some(mut runner) = self.runner.take() else {
            return true;
        };
        self.cycles_started += 1;
        let number = self.cycles_started;
        let work = current.work;
        tracing::info!(cycle = number, ?work, "cycle started");
        let exclusive = self.exclusive.clone();
        let mut task = tokio::task::spawn_blocking(move || {
            // A backup in progress finishes first (docs/backup.md).
            let _exclusive = exclusive.blocking_lock();
            let report = match work {
                Work::Cycle(req) => runner.run_cycle(req),
                Work::Rollback => runner.rollback("asked for by a user"),
            };
            let log = runner.last_log();
            (runner, report, log)
        });
        let mut stopping = false;
        let result = loop {
            tokio::select! {
                r = &mut task => break r,
                job = self.rx.recv(), if !stopping => {
                    if let Some(job) = job {
                        merge(&mut current, queue, job);
                    }
                }
                _ = self.shutdown.recv(), if !stopping => {
                    stopping = true;
                    tracing::info!(cycle = number, "waiting for the cycle in flight to finish");
                }
            }
        };
        match result {
            Ok((runner, report, log)) => {
                tracing::info!(cycle = number, outcome = ?report.outcome, failed_step = ?report.failed_step, message = ?report.message, "cycle finished");
                self.runner = Some(runner);
                if let Ok(mut l) = self.last_log.lock() {
                    *l = log;
                }
                for w in current.waiters {
                    let _ = w.send(report.clone());
                }
            }
            Err(e) => {
                // The runner panicked: it is gone, and so is the worker. The daemon keeps
                // answering status; systemd restarts it after a stop.
                tracing::error!(cycle = number, error = %e, "the cycle panicked; no more cycles will run");
                self.status.update(|s| {
                    s.phase = crate::status::Phase::Idle;
                    s.progress = None;
                });
                let report = CycleReport {
                    outcome: Outcome::Failed,
                    generation: None,
                    failed_step: Some(crate::status::Step::Agent),
                    message: Some(format!("the cycle panicked: {e}")),
                };
                for w in current.waiters {
                    let _ = w.send(report.clone());
                }
            }
        }
        stopping
    }
}

/// Merges a request that arrived while `current` runs.
fn merge(current: &mut Batch, queue: &mut VecDeque<Batch>, job: Job) {
    let joins_current = matches!(
        (job.work, current.work),
        (
            Work::Cycle(CycleRequest::Check | CycleRequest::Scheduled),
            Work::Cycle(_)
        ) | (
            Work::Cycle(CycleRequest::Update),
            Work::Cycle(CycleRequest::Update | CycleRequest::Retry)
        ) | (
            Work::Cycle(CycleRequest::Retry),
            Work::Cycle(CycleRequest::Retry)
        )
    );
    if joins_current {
        current.waiters.extend(job.reply);
        return;
    }
    let is_cycle = |w: Work| matches!(w, Work::Cycle(_));
    let same_kind = queue
        .iter_mut()
        .find(|b| is_cycle(b.work) == is_cycle(job.work));
    match same_kind {
        Some(b) => {
            if job.work.weight() > b.work.weight() {
                b.work = job.work;
            }
            b.waiters.extend(job.reply);
        }
        None => queue.push_back(Batch {
            work: job.work,
            waiters: job.reply.into_iter().collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::AgentStatus;

    fn job(work: Work) -> (Job, oneshot::Receiver<CycleReport>) {
        let (tx, rx) = oneshot::channel();
        (
            Job {
                work,
                reply: Some(tx),
            },
            rx,
        )
    }

    #[test]
    fn check_joins_a_running_cycle_and_updates_coalesce_into_the_next() {
        let mut current = Batch {
            work: Work::Cycle(CycleRequest::Check),
            waiters: vec![],
        };
        let mut queue = VecDeque::new();
        let (j, _r1) = job(Work::Cycle(CycleRequest::Check));
        merge(&mut current, &mut queue, j);
        assert_eq!(current.waiters.len(), 1);
        assert!(queue.is_empty());
        for _ in 0..3 {
            let (j, _r) = job(Work::Cycle(CycleRequest::Update));
            merge(&mut current, &mut queue, j);
        }
        assert_eq!(queue.len(), 1);
        assert_eq!(queue[0].work, Work::Cycle(CycleRequest::Update));
        assert_eq!(queue[0].waiters.len(), 3);
        let (j, _r) = job(Work::Rollback);
        merge(&mut current, &mut queue, j);
        assert_eq!(queue.len(), 2);
        assert_eq!(queue[1].work, Work::Rollback);
    }

    /// A runner that takes a while and records overlapping cycles.
    struct SlowRunner {
        running: Arc<std::sync::atomic::AtomicBool>,
        overlaps: Arc<std::sync::atomic::AtomicUsize>,
        cycles: Arc<Mutex<Vec<CycleRequest>>>,
        gate: std::sync::mpsc::Receiver<()>,
        started: std::sync::mpsc::Sender<()>,
    }

    impl CycleRunner for SlowRunner {
        fn run_cycle(&mut self, req: CycleRequest) -> CycleReport {
            use std::sync::atomic::Ordering;
            if self.running.swap(true, Ordering::SeqCst) {
                self.overlaps.fetch_add(1, Ordering::SeqCst);
            }
            let _ = self.started.send(());
            // Held until the test lets it finish: "in flight" for as long as the test wants.
            let _ = self.gate.recv();
            self.cycles.lock().unwrap().push(req);
            self.running.store(false, Ordering::SeqCst);
            CycleReport {
                outcome: Outcome::Updated,
                generation: Some(1),
                failed_step: None,
                message: None,
            }
        }
        fn rollback(&mut self, _: &str) -> CycleReport {
            self.run_cycle(CycleRequest::Check)
        }
        fn last_log(&self) -> Option<String> {
            None
        }
    }

    #[allow(clippy::type_complexity)]
    fn slow_worker() -> (
        WorkerHandle,
        tokio::task::JoinHandle<()>,
        broadcast::Sender<()>,
        std::sync::mpsc::Sender<()>,
        std::sync::mpsc::Receiver<()>,
        Arc<Mutex<Vec<CycleRequest>>>,
        Arc<std::sync::atomic::AtomicUsize>,
    ) {
        let (gate_tx, gate) = std::sync::mpsc::channel();
        let (started, started_rx) = std::sync::mpsc::channel();
        let cycles = Arc::new(Mutex::new(Vec::new()));
        let overlaps = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let runner = SlowRunner {
            running: Arc::default(),
            overlaps: overlaps.clone(),
            cycles: cycles.clone(),
            gate,
            started,
        };
        let (shutdown, _) = broadcast::channel(1);
        let status = StatusCell::new(AgentStatus::default());
        let (h, task) = Worker::start(Box::new(runner), status, shutdown.subscribe());
        (h, task, shutdown, gate_tx, started_rx, cycles, overlaps)
    }

    #[tokio::test]
    async fn twenty_requests_during_a_cycle_run_as_one_more_cycle_never_two_at_once() {
        let (h, _task, _shutdown, gate, started, cycles, overlaps) = slow_worker();
        let (first, first_rx) = job(Work::Cycle(CycleRequest::Check));
        h.tx.send(first).await.unwrap();
        wait_started(&started).await;
        let mut waiters = Vec::new();
        for i in 0..20 {
            let work = if i % 2 == 0 {
                Work::Cycle(CycleRequest::Update)
            } else {
                Work::Cycle(CycleRequest::Check)
            };
            let (j, rx) = job(work);
            h.tx.send(j).await.unwrap();
            waiters.push(rx);
        }
        // Every request has been merged once the worker has emptied its inbox.
        while h.tx.capacity() < h.tx.max_capacity() {
            tokio::task::yield_now().await;
        }
        gate.send(()).unwrap();
        gate.send(()).unwrap();
        assert!(first_rx.await.is_ok());
        for w in waiters {
            assert!(w.await.is_ok());
        }
        let ran = cycles.lock().unwrap().clone();
        assert_eq!(ran, vec![CycleRequest::Check, CycleRequest::Update]);
        assert_eq!(overlaps.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    async fn wait_started(started: &std::sync::mpsc::Receiver<()>) {
        while started.try_recv().is_err() {
            tokio::task::yield_now().await;
        }
    }

    /// A backup holds the worker's exclusive lock while it runs (`daemon::backup`): a cycle
    /// asked for meanwhile waits for it, and holds the lock itself while it runs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cycle_never_runs_beside_a_backup_holding_the_exclusive_lock() {
        let (h, _task, _shutdown, gate, started, _cycles, _) = slow_worker();
        let backup = h.exclusive().lock_owned().await;
        let (j, done) = job(Work::Cycle(CycleRequest::Update));
        h.tx.send(j).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(
            started.try_recv().is_err(),
            "a cycle started while a backup ran"
        );
        drop(backup);
        wait_started(&started).await;
        assert!(
            h.exclusive().try_lock().is_err(),
            "a running cycle does not hold the lock: a backup could start"
        );
        gate.send(()).unwrap();
        assert_eq!(done.await.unwrap().outcome, Outcome::Updated);
        // The blocking task lets go of the lock as it returns.
        for _ in 0..100 {
            if h.exclusive().try_lock().is_ok() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the lock was not given back after the cycle");
    }

    #[tokio::test]
    async fn shutdown_lets_the_cycle_in_flight_finish_and_drops_the_queue() {
        let (h, task, shutdown, gate, started, cycles, _) = slow_worker();
        let (j, in_flight) = job(Work::Cycle(CycleRequest::Update));
        h.tx.send(j).await.unwrap();
        wait_started(&started).await;
        let (j, queued) = job(Work::Rollback);
        h.tx.send(j).await.unwrap();
        shutdown.send(()).unwrap();
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(!task.is_finished(), "worker stopped with a cycle in flight");
        gate.send(()).unwrap();
        task.await.unwrap();
        assert_eq!(in_flight.await.unwrap().outcome, Outcome::Updated);
        assert!(queued.await.is_err(), "queued work must not start");
        assert_eq!(cycles.lock().unwrap().len(), 1);
    }

    #[test]
    fn an_admins_retry_runs_after_a_running_update_instead_of_joining_it() {
        // Joining would lose the retry: the running update leaves a failed generation alone.
        let mut current = Batch {
            work: Work::Cycle(CycleRequest::Update),
            waiters: vec![],
        };
        let mut queue = VecDeque::new();
        let (j, _r) = job(Work::Cycle(CycleRequest::Retry));
        merge(&mut current, &mut queue, j);
        assert_eq!(current.waiters.len(), 0);
        assert_eq!(queue.len(), 1);
        let (j, _r) = job(Work::Cycle(CycleRequest::Update));
        merge(&mut current, &mut queue, j);
        assert_eq!(current.waiters.len(), 1);
        assert_eq!(queue[0].work, Work::Cycle(CycleRequest::Retry));
        // A running retry serves an update too.
        let mut current = Batch {
            work: Work::Cycle(CycleRequest::Retry),
            waiters: vec![],
        };
        let mut queue = VecDeque::new();
        let (j, _r) = job(Work::Cycle(CycleRequest::Update));
        merge(&mut current, &mut queue, j);
        assert_eq!((current.waiters.len(), queue.len()), (1, 0));
    }

    #[test]
    fn update_joins_a_running_update() {
        let mut current = Batch {
            work: Work::Cycle(CycleRequest::Update),
            waiters: vec![],
        };
        let mut queue = VecDeque::new();
        let (j, _r) = job(Work::Cycle(CycleRequest::Update));
        merge(&mut current, &mut queue, j);
        assert_eq!((current.waiters.len(), queue.len()), (1, 0));
    }
}
