//! The HTTP server: binds 127.0.0.1, serves HTTP/1.1 connections with the router, and stops
//! on request. [`start`] is also the in-process entry point for Rust tests.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::clock::SimClock;
use crate::faults::{FaultRule, Faults};
use crate::fleet::Fleet;
use crate::forward::{Forwarder, Incoming};
use crate::oracle::Stats;
use crate::router::{self, Dropped};
use crate::services::sts::Sessions;
use crate::sim::{Sim, SimConfig};
use crate::state::AppState;

/// How to run the simulator. `None` fields fall back to the fleet file's `[settings]`,
/// then to the defaults (speed 60, visibility 1500 ms, pending 2 s).
#[derive(Debug, Clone)]
pub struct Options {
    /// The fleet.
    pub fleet: Fleet,
    /// Port on 127.0.0.1 (0 = any free port).
    pub port: u16,
    /// moto base URL for forwarded calls.
    pub moto_url: Option<String>,
    /// Lambda emulator base URL for Invoke.
    pub lambda_url: Option<String>,
    /// Clock speed.
    pub speed: Option<f64>,
    /// InvocationDoesNotExist window, wall-clock ms.
    pub invocation_visibility_ms: Option<u64>,
    /// Simulated seconds an online invocation stays Pending.
    pub pending_seconds: Option<u64>,
    /// Extra faults active from the start.
    pub faults: Vec<FaultRule>,
    /// IAM evaluator sidecar URL: every call is then evaluated and denied as AWS would.
    pub iam_url: Option<String>,
    /// Lambda functions' timeouts in seconds (the template's `Timeout`), by function name.
    pub lambda_timeouts: std::collections::BTreeMap<String, f64>,
}

impl Options {
    /// Options for `fleet` with every default, on a free port.
    pub fn new(fleet: Fleet) -> Self {
        Self {
            fleet,
            port: 0,
            moto_url: None,
            lambda_url: None,
            speed: None,
            invocation_visibility_ms: None,
            pending_seconds: None,
            faults: Vec::new(),
            iam_url: None,
            lambda_timeouts: std::collections::BTreeMap::new(),
        }
    }
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The port could not be bound.
    #[error("cannot bind 127.0.0.1:{port}: {source}")]
    Bind {
        /// Requested port.
        port: u16,
        /// Underlying error.
        source: std::io::Error,
    },
}

/// A running simulator.
#[derive(Debug)]
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    /// Its state (tests may inspect it directly).
    pub state: Arc<AppState>,
    shutdown: watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Running {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, closes open connections and waits for the server task.
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }

    /// Waits until the server stops (after [`Running::shutdown`] from elsewhere).
    pub async fn wait(&self) {
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

/// Starts the simulator on the current Tokio runtime.
pub async fn start(opts: Options) -> Result<Running, StartError> {
    let settings = opts.fleet.settings.clone();
    let speed = opts.speed.or(settings.speed).unwrap_or(60.0);
    let sim_config = SimConfig {
        pending_ms: opts
            .pending_seconds
            .or(settings.pending_seconds)
            .unwrap_or(2) as i64
            * 1000,
        visibility_ms: opts
            .invocation_visibility_ms
            .or(settings.invocation_visibility_ms)
            .unwrap_or(1500),
    };
    let clock = SimClock::new(speed);
    let mut faults = opts.fleet.faults.clone();
    faults.extend(opts.faults);
    let state = Arc::new(AppState {
        sim: Mutex::new(Sim::new(opts.fleet.clone(), sim_config, clock.now_ms())),
        clock,
        sim_config,
        sessions: Mutex::new(Sessions::default()),
        faults: Mutex::new(Faults::new(faults, settings.fault_seed.unwrap_or(1))),
        stats: Mutex::new(Stats::default()),
        forwarder: Forwarder::new(opts.moto_url, opts.lambda_url)
            .with_lambda_timeouts(opts.lambda_timeouts),
        iam: opts.iam_url.map(crate::iam::Iam::new),
        fleet: opts.fleet,
    });
    let listener = TcpListener::bind(("127.0.0.1", opts.port))
        .await
        .map_err(|source| StartError::Bind {
            port: opts.port,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        port: opts.port,
        source,
    })?;
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(accept_loop(listener, state.clone(), rx));
    Ok(Running {
        addr,
        state,
        shutdown: tx,
        task: Mutex::new(Some(task)),
    })
}

async fn accept_loop(listener: TcpListener, state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        async move { serve(state, req).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
}

async fn serve(
    state: Arc<AppState>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<crate::protocol::HttpResponse, Dropped> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(Dropped),
    };
    let incoming = Incoming {
        method: parts.method,
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".to_string()),
        headers: parts.headers,
        body,
    };
    router::handle(state, incoming).await
}
