//! A small Kubernetes API server for testing `switchyard-kube` where no
//! real one can run: discovery, list (pages, continue tokens, selectors),
//! watch (chunked event streams, bookmarks, 410 Expired), writes with
//! optimistic concurrency, `status` subresources and Leases, over plain
//! HTTP/1.1, for the kinds Switchyard reads. Tests start it in-process,
//! change objects, compact its history and stop or restart it; the
//! `yard-apiserver` binary serves the same from the command line. It is a
//! test fixture and must never be built into the appliance or the
//! sidecar; it has no authentication, admission or TLS.

pub mod client;
pub mod error;
pub mod http;
pub mod kinds;
pub mod list;
pub mod manifest;
pub mod patch;
pub mod selector;
mod server;
pub mod shared;
pub mod store;
mod token;
mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde_json::Value;

pub use client::Client;
pub use error::ApiError;
pub use kinds::CatalogOptions;
pub use shared::{LoadReport, RecordedRequest};

use http::{Connections, Listener};
use kinds::Catalog;
use shared::{Shared, StoreState};
use store::Store;

/// Why the server could not start or load something.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("listening on {0}: {1}")]
    Listen(SocketAddr, #[source] std::io::Error),
    #[error("state file {0}: {1}")]
    State(PathBuf, String),
    #[error("reading a manifest: {0}")]
    Manifest(#[from] manifest::ManifestError),
    #[error("storing an object: {0}")]
    Api(#[from] ApiError),
}

/// How to run the server.
#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    pub catalog: CatalogOptions,
    /// How many changes the history keeps for watches and consistent
    /// lists; older starts get 410 Gone.
    pub history_limit: usize,
    /// How often a watch that asked for bookmarks gets one.
    pub bookmark_interval: Duration,
    /// Where the store is written after every change and read at start.
    pub state_file: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            catalog: CatalogOptions::default(),
            history_limit: 1000,
            bookmark_interval: Duration::from_secs(10),
            state_file: None,
        }
    }
}

/// A running (or stopped) server and the store behind it.
pub struct ApiServer {
    shared: Arc<Shared>,
    listener: Option<Listener>,
    addr: SocketAddr,
}

impl ApiServer {
    /// Starts on `options.listen`, with the store of `options.state_file`
    /// when that file exists.
    pub fn start(options: Options) -> Result<Self, SimError> {
        let store = match &options.state_file {
            Some(path) => match shared::read_persisted(path)? {
                Some(persisted) => Store::from_persisted(persisted, options.history_limit),
                None => Store::new(options.history_limit),
            },
            None => Store::new(options.history_limit),
        };
        let shared = Arc::new(Shared {
            catalog: Catalog::new(options.catalog),
            state: Mutex::new(StoreState { store, epoch: 0 }),
            changed: Condvar::new(),
            requests: Mutex::new(Vec::new()),
            connections: Arc::new(Connections::default()),
            bookmark_interval: options.bookmark_interval,
            state_file: options.state_file.clone(),
            server_url: Mutex::new(String::new()),
            delay: Mutex::new(Duration::ZERO),
        });
        let mut server = ApiServer {
            shared,
            listener: None,
            addr: options.listen,
        };
        server.listen()?;
        Ok(server)
    }

    /// Starts with default options on a free port of 127.0.0.1.
    pub fn start_default() -> Result<Self, SimError> {
        Self::start(Options::default())
    }

    fn listen(&mut self) -> Result<(), SimError> {
        let handler: Arc<dyn http::Handler> = self.shared.clone();
        let listener = Listener::bind(self.addr, handler, self.shared.connections.clone())
            .map_err(|e| SimError::Listen(self.addr, e))?;
        self.addr = listener.addr();
        *self
            .shared
            .server_url
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = self.url();
        self.listener = Some(listener);
        Ok(())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A blocking client for this server.
    pub fn client(&self) -> Client {
        Client::new(self.addr)
    }

    /// A kubeconfig that points at this server, with no credentials.
    pub fn kubeconfig(&self) -> String {
        kubeconfig(&self.url())
    }

    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig())
    }

    /// Creates or replaces each object of a multi-document YAML text, status
    /// included; documents of kinds not served are skipped and listed.
    pub fn load_yaml(&self, text: &str) -> Result<LoadReport, SimError> {
        self.shared.load(text)
    }

    /// Creates or replaces one object, status included, whatever its
    /// resourceVersion (the test, not a client, is writing).
    pub fn apply(&self, object: Value) -> Result<Value, ApiError> {
        self.shared.upsert(object)
    }

    /// Deletes an object; `namespace` is ignored for cluster-scoped kinds.
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.shared.delete(api_version, kind, namespace, name)
    }

    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        self.shared.get(api_version, kind, namespace, name)
    }

    /// The last resourceVersion handed out.
    pub fn revision(&self) -> u64 {
        self.shared.lock().store.revision()
    }

    /// Drops the change history, as etcd compaction does: every watch
    /// start and continue token from before now gets 410 Gone.
    pub fn compact(&self) -> u64 {
        self.shared.compact()
    }

    /// The write requests received (POST, PUT, PATCH, DELETE), in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn clear_requests(&self) {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Makes every API answer (not the `/_sim` controls) wait `delay`
    /// first, as an overloaded server does; zero ends it.
    pub fn set_delay(&self, delay: Duration) {
        *self.shared.delay.lock().unwrap_or_else(|p| p.into_inner()) = delay;
    }

    /// Cuts every open connection (watches included) and keeps serving, as
    /// a load balancer in front of an API server might.
    pub fn disconnect_all(&self) {
        self.shared.connections.disconnect_all(None);
    }

    /// Stops as a killed process would: the port is closed and every open
    /// connection cut mid-stream. The store is kept.
    pub fn stop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.epoch += 1;
            self.shared.changed.notify_all();
        }
        if let Some(mut listener) = self.listener.take() {
            listener.stop();
        }
    }

    /// Serves again on the same port with the same store; the change
    /// history is gone, as a restarted server's watch cache is.
    pub fn restart(&mut self) -> Result<(), SimError> {
        self.stop();
        self.shared.compact();
        self.listen()
    }

    pub fn is_running(&self) -> bool {
        self.listener.is_some()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A kubeconfig for `server` with one context and no credentials.
pub fn kubeconfig(server: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: yard-apiserver
  cluster:
    server: {server}
contexts:
- name: yard-apiserver
  context:
    cluster: yard-apiserver
    user: yard-apiserver
    namespace: default
current-context: yard-apiserver
users:
- name: yard-apiserver
  user: {{}}
"
    )
}
