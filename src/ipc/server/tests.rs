//! The server against a fake agent over a real socket: the client limit, the idle timeout,
//! answers after a half-close, and a call in flight across shutdown.

use super::*;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::Semaphore;
use tokio::time::timeout;

struct FakeAgent {
    status: watch::Sender<AgentStatus>,
    /// A call finishes when the test adds a permit.
    gate: Arc<Semaphore>,
    calls_started: Arc<std::sync::atomic::AtomicUsize>,
}

impl AgentService for FakeAgent {
    fn subscribe(&self) -> watch::Receiver<AgentStatus> {
        self.status.subscribe()
    }
    fn last_log(&self) -> Option<String> {
        None
    }
    fn run(
        &self,
        _cmd: Command,
        _admin: bool,
    ) -> Pin<Box<dyn Future<Output = Result<CycleReport, ServiceError>> + Send>> {
        let gate = self.gate.clone();
        self.calls_started
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            let _ = gate.acquire().await.map(|p| p.forget());
            Ok(CycleReport {
                outcome: crate::status::Outcome::Updated,
                generation: Some(2),
                failed_step: None,
                message: None,
            })
        })
    }
    fn backup(&self, _cmd: Command) -> BackupCall {
        let gate = self.gate.clone();
        Box::pin(async move {
            let _ = gate.acquire().await.map(|p| p.forget());
            Ok(BackupAnswer::Snapshots(Vec::new()))
        })
    }
}

async fn read_all(s: &mut UnixStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = String::new();
    timeout(Duration::from_secs(30), s.read_to_string(&mut out))
        .await
        .expect("the server should close the connection")
        .unwrap();
    out
}

#[tokio::test]
async fn client_limit_idle_timeout_and_answers_after_half_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run").join("agent.sock");
    let listener = bind(&path, None).unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let (status, _) = watch::channel(AgentStatus::default());
    let calls_started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let service = Arc::new(FakeAgent {
        status,
        gate: gate.clone(),
        calls_started: calls_started.clone(),
    });
    let access = AccessPolicy {
        socket_group: "test".into(),
        socket_gid: Some(nix::unistd::getegid()),
        admin_group: "test".into(),
        admin_gid: None,
    };
    let limits = Limits {
        max_clients: 2,
        idle_timeout: Duration::from_millis(200),
        write_timeout: Duration::from_secs(5),
        max_calls: 8,
        max_clients_per_uid: 16,
    };
    tokio::spawn(serve(
        listener,
        service,
        access,
        limits,
        std::future::pending::<()>(),
    ));

    // A subscriber is never idle; a silent client is closed.
    let mut subscriber = UnixStream::connect(&path).await.unwrap();
    subscriber
        .write_all(b"{\"id\":1,\"cmd\":\"subscribe\"}\n")
        .await
        .unwrap();
    let mut silent = UnixStream::connect(&path).await.unwrap();
    assert_eq!(read_all(&mut silent).await, "");

    // An update sent before closing the sending side is still answered.
    let mut caller = UnixStream::connect(&path).await.unwrap();
    caller
        .write_all(b"{\"id\":9,\"cmd\":\"update\"}\n")
        .await
        .unwrap();
    caller.shutdown().await.unwrap();

    // Two clients are connected: a third gets `busy` and is closed.
    let mut third = UnixStream::connect(&path).await.unwrap();
    let answer = read_all(&mut third).await;
    assert!(answer.contains("\"code\":\"busy\""), "{answer}");

    gate.add_permits(1);
    let answer = read_all(&mut caller).await;
    let v: serde_json::Value = serde_json::from_str(answer.trim()).unwrap();
    assert_eq!(v["id"], 9);
    assert_eq!(v["data"]["outcome"], "updated");
}

#[tokio::test]
async fn shutdown_still_delivers_the_answer_of_a_call_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    let listener = bind(&path, None).unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let (status, _) = watch::channel(AgentStatus::default());
    let calls_started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let service = Arc::new(FakeAgent {
        status,
        gate: gate.clone(),
        calls_started: calls_started.clone(),
    });
    let access = AccessPolicy {
        socket_group: "test".into(),
        socket_gid: Some(nix::unistd::getegid()),
        admin_group: "test".into(),
        admin_gid: None,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, service, access, Limits::default(), stop_rx));
    let mut caller = UnixStream::connect(&path).await.unwrap();
    caller
        .write_all(b"{\"id\":3,\"cmd\":\"update\"}\n")
        .await
        .unwrap();
    // Once the call has started, stop the server.
    while calls_started.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    stop_tx.send(()).unwrap();
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(
        !server.is_finished(),
        "the server stopped before the call's answer"
    );
    gate.add_permits(1);
    let answer = read_all(&mut caller).await;
    assert!(
        answer.contains("\"id\":3") && answer.contains("updated"),
        "{answer}"
    );
    server.await.unwrap();
}

#[tokio::test]
async fn backup_calls_count_against_the_calls_in_flight_of_a_connection() {
    // A local user may not pile up backup or snapshot calls on one connection any more than
    // cycles: past `max_calls` in flight the answer is `busy`.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    let listener = bind(&path, None).unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let (status, _) = watch::channel(AgentStatus::default());
    let service = Arc::new(FakeAgent {
        status,
        gate: gate.clone(),
        calls_started: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
    });
    let access = AccessPolicy {
        socket_group: "test".into(),
        socket_gid: Some(nix::unistd::getegid()),
        admin_group: "test".into(),
        admin_gid: None,
    };
    let limits = Limits {
        max_calls: 2,
        ..Limits::default()
    };
    tokio::spawn(serve(
        listener,
        service,
        access,
        limits,
        std::future::pending::<()>(),
    ));
    let mut caller = UnixStream::connect(&path).await.unwrap();
    for (id, cmd) in [(1, "backup"), (2, "snapshots"), (3, "backup")] {
        let line = format!("{{\"id\":{id},\"cmd\":\"{cmd}\"}}\n");
        caller.write_all(line.as_bytes()).await.unwrap();
    }
    caller.shutdown().await.unwrap();
    // The third is refused at once; the first two are answered when they end.
    gate.add_permits(2);
    let answers = read_all(&mut caller).await;
    let by_id: Vec<serde_json::Value> = answers
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let busy: Vec<_> = by_id
        .iter()
        .filter(|v| v["error"]["code"] == "busy")
        .map(|v| v["id"].clone())
        .collect();
    assert_eq!(busy, vec![serde_json::json!(3)], "{answers}");
    assert_eq!(by_id.len(), 3, "{answers}");
}
