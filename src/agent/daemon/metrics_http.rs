//! agent.toml `metrics`: `/metrics` on a listener of its own (never the update trigger's), the
//! counters of `agent::metrics` and the live status. It answers `GET /metrics` and nothing else,
//! starts nothing, and an address it cannot bind leaves the agent running without it.

use crate::agent::daemon::status_cell::StatusCell;
use crate::agent::metrics::{render, Counters};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{header, Method, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, Semaphore};

const MAX_CONNECTIONS: usize = 8;
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// agent.toml `metrics`: the listener's task, when it is set and its address could be bound.
pub async fn start(
    config: &crate::config::AgentConfig,
    status: &StatusCell,
    shutdown: &broadcast::Sender<()>,
) -> Option<tokio::task::JoinHandle<()>> {
    if config.metrics.is_empty() {
        return None;
    }
    let l = bind(&config.metrics).await?;
    Some(tokio::spawn(serve(
        l,
        config.state_dir.clone(),
        status.clone(),
        shutdown.subscribe(),
    )))
}

/// Binds `addr`; `None` (and a warning) when it cannot.
pub async fn bind(addr: &str) -> Option<TcpListener> {
    match TcpListener::bind(addr).await {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!("metrics: cannot listen on {addr}: {e}; running without /metrics");
            None
        }
    }
}

/// Serves until shutdown.
pub async fn serve(
    listener: TcpListener,
    state_dir: PathBuf,
    status: StatusCell,
    mut shutdown: broadcast::Receiver<()>,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let state_dir = Arc::new(state_dir);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.recv() => return,
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            continue;
        };
        let (state_dir, status) = (state_dir.clone(), status.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let ok = req.method() == Method::GET && req.uri().path() == "/metrics";
                let r = if ok {
                    page(render(&Counters::load(&state_dir), &status.get()))
                } else {
                    let mut r = page("only GET /metrics is served\n".into());
                    *r.status_mut() = StatusCode::NOT_FOUND;
                    r
                };
                async move { Ok::<_, Infallible>(r) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            drop(permit);
        });
    }
}

fn page(text: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}
