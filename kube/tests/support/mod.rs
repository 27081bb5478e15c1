//! What the sidecar's cluster tests share: a stand-in for the daemon's
//! control socket that resolves what it gets with the config crate (as the
//! daemon does, without a dataplane), the sidecar run in-process against
//! the API server simulator, and polling with a deadline.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_apiserver_sim::ApiServer;
use switchyard_kube::lease::LeaseConfig;
use switchyard_kube::sidecar::{self, Options};
use switchyard_proto::{ClusterApplyOutcome, ClusterApplyReport, ClusterConfig, Request, Response};
use tokio::sync::watch;

/// Calls `check` every 20 ms until it returns `Some`, or panics naming
/// `what` once `timeout` has passed.
pub fn poll_until<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Generous: these machines are shared and noisy.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-kube-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a temporary directory");
    dir
}

/// Where the stand-in daemon of `dir` listens.
pub fn socket_in(dir: &Path) -> PathBuf {
    dir.join("control.sock")
}

/// What the stand-in daemon received and answered.
#[derive(Debug, Clone)]
pub struct Received {
    pub config: ClusterConfig,
    pub report: ClusterApplyReport,
}

/// A control socket answering `ApplyCluster` as the daemon does: the
/// contents loaded and resolved by the config crate, Unchanged when they
/// are the same as last time, Refused (keeping the last statuses) when
/// they do not load. `mark` is appended to every condition message, so a
/// test can tell which sidecar wrote a status.
pub struct FakeDaemon {
    pub path: PathBuf,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeDaemon {
    pub fn start(dir: &Path, mark: &str) -> FakeDaemon {
        let path = socket_in(dir);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("binding the control socket");
        listener.set_nonblocking(true).expect("non-blocking accept");
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let received = received.clone();
            let stop = stop.clone();
            let mark = mark.to_owned();
            std::thread::spawn(move || {
                let mut running: Option<(String, u64, Vec<Value>)> = None;
                while !stop.load(Ordering::Relaxed) {
                    let stream = match listener.accept() {
                        Ok((stream, _)) => stream,
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                    };
                    stream.set_nonblocking(false).expect("blocking stream");
                    let mut reader = BufReader::new(&stream);
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() {
                        continue;
                    }
                    let response = match serde_json::from_str::<Request>(&line) {
                        Ok(Request::ApplyCluster(config)) => {
                            let report = answer(&config, &mut running, &mark);
                            received.lock().unwrap().push(Received {
                                config,
                                report: report.clone(),
                            });
                            Response::ApplyCluster(report)
                        }
                        other => Response::Error {
                            message: format!("unexpected request {other:?}"),
                        },
                    };
                    let mut text = serde_json::to_string(&response).unwrap();
                    text.push('\n');
                    let _ = (&stream).write_all(text.as_bytes());
                }
            })
        };
        FakeDaemon {
            path,
            received,
            stop,
            thread: Some(thread),
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// The contents of the last update applied.
    pub fn last_applied(&self) -> Option<String> {
        self.received()
            .into_iter()
            .rev()
            .find(|r| r.report.outcome == ClusterApplyOutcome::Applied)
            .map(|r| r.config.contents)
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn answer(
    config: &ClusterConfig,
    running: &mut Option<(String, u64, Vec<Value>)>,
    mark: &str,
) -> ClusterApplyReport {
    let generation = running.as_ref().map_or(0, |r| r.1);
    if running.as_ref().is_some_and(|r| r.0 == config.contents) {
        let statuses = running.as_ref().map(|r| r.2.clone()).unwrap_or_default();
        return report(ClusterApplyOutcome::Unchanged, generation, None, statuses);
    }
    let loaded = switchyard_config::load_str(&config.source, &config.contents)
        .map_err(|e| e.to_string())
        .and_then(|resources| {
            let resolution = switchyard_config::resolve(&resources, generation + 1);
            switchyard_config::refuse(&resources, &resolution).map_err(|e| e.to_string())?;
            Ok(resolution)
        });
    match loaded {
        Ok(resolution) => {
            let statuses: Vec<Value> = resolution
                .statuses
                .iter()
                .map(|s| marked(serde_json::to_value(s).unwrap(), mark))
                .collect();
            *running = Some((config.contents.clone(), generation + 1, statuses.clone()));
            report(ClusterApplyOutcome::Applied, generation + 1, None, statuses)
        }
        Err(error) => {
            let statuses = running.as_ref().map(|r| r.2.clone()).unwrap_or_default();
            report(
                ClusterApplyOutcome::Refused,
                generation,
                Some(error),
                statuses,
            )
        }
    }
}

fn report(
    outcome: ClusterApplyOutcome,
    generation: u64,
    error: Option<String>,
    statuses: Vec<Value>,
) -> ClusterApplyReport {
    ClusterApplyReport {
        outcome,
        generation,
        error,
        diagnostics: Vec::new(),
        statuses,
    }
}

fn marked(mut value: Value, mark: &str) -> Value {
    if mark.is_empty() {
        return value;
    }
    match &mut value {
        Value::Object(map) => {
            if let Some(Value::String(message)) = map.get_mut("message") {
                message.push_str(mark);
            }
            for (_, v) in map.iter_mut() {
                *v = marked(v.take(), mark);
            }
        }
        Value::Array(items) => {
            for v in items.iter_mut() {
                *v = marked(v.take(), mark);
            }
        }
        _ => {}
    }
    value
}

/// A sidecar running in-process on its own runtime.
pub struct Sidecar {
    stop: watch::Sender<bool>,
    runtime: Option<tokio::runtime::Runtime>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Options for tests: a short Lease, no periodic resend (a test that
/// counts updates must see only the ones changes caused).
pub fn options(server: &ApiServer, dir: &Path, socket: &Path, identity: &str) -> Options {
    let kubeconfig = dir.join(format!("kubeconfig-{identity}"));
    server
        .write_kubeconfig(&kubeconfig)
        .expect("writing a kubeconfig");
    let mut lease = LeaseConfig::new("switchyard-system", "switchyard-status", identity);
    lease.duration = Duration::from_secs(3);
    lease.retry = Duration::from_millis(500);
    lease.renew_deadline = Duration::from_secs(2);
    let mut options = Options::new(socket.to_owned(), Some(kubeconfig), lease);
    options.resync = Duration::from_secs(3600);
    options.rediscover = Duration::from_secs(1);
    options
}

impl Sidecar {
    pub fn start(options: Options) -> Sidecar {
        let _ = env_logger::builder().is_test(true).try_init();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let (stop, stopped) = watch::channel(false);
        let task = runtime.spawn(sidecar::run(options, stopped));
        Sidecar {
            stop,
            runtime: Some(runtime),
            task: Some(task),
        }
    }

    /// Stops as SIGTERM does: the Lease is released.
    pub fn stop(mut self) {
        self.stop.send_replace(true);
        if let (Some(runtime), Some(task)) = (self.runtime.take(), self.task.take()) {
            let result = runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), task).await });
            assert!(result.is_ok(), "the sidecar did not stop within 10s");
            runtime.shutdown_background();
        }
    }

    /// Stops as a killed process does: nothing is released.
    pub fn kill(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The objects of a rendered contents text, one JSON document each.
pub fn documents(contents: &str) -> Vec<Value> {
    contents
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_json::from_str(d).expect("each document is JSON"))
        .collect()
}

/// Status PATCHes the server received for `plural` `name`.
pub fn status_patches(server: &ApiServer, plural: &str, name: &str) -> Vec<Value> {
    let suffix = format!("/{plural}/{name}/status");
    server
        .requests()
        .into_iter()
        .filter(|r| {
            r.method == "PATCH" && r.path.split('?').next().unwrap_or("").ends_with(&suffix)
        })
        .filter_map(|r| serde_json::from_str(&r.body).ok())
        .collect()
}
