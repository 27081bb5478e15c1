//! The sidecar's tasks and how they meet: one watch task per kind feeds the
//! core, which keeps the cluster store, debounces changes into one
//! `ApplyCluster` at a time for the sender, and turns the daemon's answers
//! into status writes when this sidecar holds the Lease.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use kube::Client;
use serde_json::Value;
use switchyard_proto::client::ClientError;
use switchyard_proto::{ClusterApplyOutcome, ClusterApplyReport, ClusterConfig, Request, Response};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::kinds::WATCHED;
use crate::lease::{self, LeaseConfig};
use crate::store::ClusterStore;
use crate::watch::{watch_kind, Message};
use crate::writeback::{self, InFlight, StatusWrite};
use crate::{status, MAX_BATCH_DELAY};

/// Field manager of every status write.
pub const FIELD_MANAGER: &str = "switchyard";

#[derive(Debug, Clone)]
pub struct Options {
    pub control_socket: PathBuf,
    /// `None`: in-cluster, or `$KUBECONFIG`, or `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    pub lease: LeaseConfig,
    /// Changes closer together than this go to the daemon as one update.
    pub debounce: Duration,
    /// How often the last update is sent again (the daemon answers
    /// Unchanged, or takes it anew if it restarted meanwhile).
    pub resync: Duration,
    /// How often a kind the server does not serve is looked for again.
    pub rediscover: Duration,
}

impl Options {
    pub fn new(control_socket: PathBuf, kubeconfig: Option<PathBuf>, lease: LeaseConfig) -> Self {
        Options {
            control_socket,
            kubeconfig,
            lease,
            debounce: Duration::from_millis(200),
            resync: Duration::from_secs(30),
            rediscover: Duration::from_secs(60),
        }
    }
}

/// A kube client for `kubeconfig` (or inferred), and the source name the
/// daemon shows for it: `cluster <API server URL>`.
pub async fn connect(kubeconfig: Option<&PathBuf>) -> anyhow::Result<(Client, String)> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("using kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "finding the API server (in-cluster service account, $KUBECONFIG or ~/.kube/config)",
        )?,
    };
    let source = format!(
        "cluster {}",
        config.cluster_url.to_string().trim_end_matches('/')
    );
    let client = Client::try_from(config).context("building the API client")?;
    Ok((client, source))
}

/// Runs the sidecar until `stop` turns true.
pub async fn run(options: Options, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let (client, source) = connect(options.kubeconfig.as_ref()).await?;
    log::info!(
        "switchyard-kube {}: {source}, daemon on {}, identity {}",
        env!("CARGO_PKG_VERSION"),
        options.control_socket.display(),
        options.lease.identity
    );
    run_with_client(client, source, options, stop).await
}

/// `run` with a client already made.
pub async fn run_with_client(
    client: Client,
    source: String,
    options: Options,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut watches = Vec::new();
    for kind in WATCHED {
        watches.push(tokio::spawn(watch_kind(
            client.clone(),
            kind,
            options.rediscover,
            events_tx.clone(),
        )));
    }
    drop(events_tx);

    let (leader_tx, mut leader) = watch::channel(false);
    let election = tokio::spawn(lease::run(
        client.clone(),
        options.lease.clone(),
        leader_tx,
        stop.clone(),
    ));

    let (contents_tx, contents_rx) = watch::channel::<Option<Arc<String>>>(None);
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    let sender = tokio::spawn(send_to_daemon(
        options.control_socket.clone(),
        source,
        options.resync,
        contents_rx,
        reports_tx,
    ));

    let (writes_tx, writes_rx) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_statuses(client.clone(), leader.clone(), writes_rx));

    let mut store = ClusterStore::default();
    let mut resources: HashMap<&'static str, ApiResource> = HashMap::new();
    let mut batch: Option<Batch> = None;
    let mut last_sent: Option<Arc<String>> = None;
    let mut statuses: Option<Vec<Value>> = None;
    let mut in_flight = InFlight::default();
    let mut reported_waiting = false;
    let max_delay = MAX_BATCH_DELAY.max(options.debounce);

    loop {
        let mut plan_writes = false;
        let deadline = batch
            .as_ref()
            .map(|b| b.deadline(options.debounce, max_delay));
        tokio::select! {
            message = events.recv() => {
                let Some(message) = message else { break };
                let effect = match message {
                    Message::Served(kind, resource) => {
                        store.served(kind.kind, &resource.api_version);
                        resources.insert(kind.kind, resource);
                        Default::default()
                    }
                    Message::NotServed(kind) => store.not_served(kind.kind),
                    Message::Change(kind, change) => store.apply(kind.kind, change),
                };
                if effect.contents {
                    let now = Instant::now();
                    batch.get_or_insert(Batch { first: now, last: now }).last = now;
                }
                plan_writes |= effect.status;
            }
            _ = sleep_until(deadline), if deadline.is_some() => {
                batch = None;
                match store.contents() {
                    Some(text) => {
                        reported_waiting = false;
                        if last_sent.as_deref() != Some(&text) {
                            let text = Arc::new(text);
                            last_sent = Some(text.clone());
                            contents_tx.send_replace(Some(text));
                        }
                    }
                    None => {
                        if !reported_waiting {
                            log::info!(
                                "waiting for the first complete list of: {}",
                                store.waiting_for().join(", ")
                            );
                            reported_waiting = true;
                        }
                    }
                }
            }
            report = reports.recv() => {
                let Some(report) = report else { break };
                statuses = Some(report);
                plan_writes = true;
            }
            changed = leader.changed() => {
                if changed.is_err() {
                    break;
                }
                // A new term starts from what the watches show, not from
                // what an earlier term planned.
                in_flight.clear();
                plan_writes = *leader.borrow_and_update();
            }
            _ = stop.wait_for(|s| *s) => break,
        }
        if plan_writes && *leader.borrow() {
            if let Some(statuses) = &statuses {
                let planned = writeback::plan(
                    &store,
                    statuses,
                    &status::now_rfc3339(),
                    &mut in_flight,
                    std::time::Instant::now(),
                );
                for write in planned {
                    if let Some(resource) = resources.get(write.kind.kind) {
                        let _ = writes_tx.send((resource.clone(), write));
                    }
                }
            }
        }
    }

    for task in watches {
        task.abort();
    }
    sender.abort();
    writer.abort();
    // The election releases the Lease when it sees `stop`.
    let _ = tokio::time::timeout(Duration::from_secs(5), election).await;
    Ok(())
}

/// Changes waiting to be sent: the first and the last.
#[derive(Debug, Clone, Copy)]
struct Batch {
    first: Instant,
    last: Instant,
}

impl Batch {
    /// Quiet for `debounce`, or waiting for `max_delay` already, so a
    /// steady stream of changes still gets through.
    fn deadline(&self, debounce: Duration, max_delay: Duration) -> Instant {
        (self.last + debounce).min(self.first + max_delay)
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Sends the latest contents to the daemon, one request at a time, again
/// every `resync`, and passes the statuses it answers with on.
async fn send_to_daemon(
    socket: PathBuf,
    source: String,
    resync: Duration,
    mut contents: watch::Receiver<Option<Arc<String>>>,
    reports: mpsc::UnboundedSender<Vec<Value>>,
) {
    let mut waiting_logged = false;
    let mut retry = RETRY_MIN;
    loop {
        let Some(text) = contents.borrow_and_update().clone() else {
            if contents.changed().await.is_err() {
                return;
            }
            continue;
        };
        let request = Request::ApplyCluster(ClusterConfig {
            source: source.clone(),
            contents: text.to_string(),
        });
        let path = socket.clone();
        let answer =
            tokio::task::spawn_blocking(move || switchyard_proto::client::request(&path, &request))
                .await;
        let wait = match answer {
            Ok(Ok(Response::ApplyCluster(report))) => {
                if waiting_logged {
                    log::info!("the daemon on {} answers", socket.display());
                    waiting_logged = false;
                }
                retry = RETRY_MIN;
                log_report(&report, text.len());
                if reports.send(report.statuses).is_err() {
                    return;
                }
                resync
            }
            Ok(Ok(other)) => {
                log::error!("the daemon answered ApplyCluster with {other:?}: is it a Switchyard of another version?");
                retry = (retry * 2).min(RETRY_MAX);
                RETRY_MAX
            }
            Ok(Err(error @ (ClientError::NoSocket { .. } | ClientError::NotRunning { .. }))) => {
                if !waiting_logged {
                    log::warn!("waiting for the daemon: {error}");
                    waiting_logged = true;
                }
                let wait = retry;
                retry = (retry * 2).min(RETRY_MAX);
                wait
            }
            Ok(Err(error)) => {
                log::error!("sending the cluster's objects to the daemon: {error}");
                let wait = retry;
                retry = (retry * 2).min(RETRY_MAX);
                wait
            }
            Err(join) => {
                log::error!("sending the cluster's objects to the daemon: {join}");
                RETRY_MAX
            }
        };
        // Newer contents go out at once; the same again after `wait`.
        tokio::select! {
            changed = contents.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

fn log_report(report: &ClusterApplyReport, bytes: usize) {
    match report.outcome {
        ClusterApplyOutcome::Applied => log::info!(
            "the daemon applied the cluster's objects ({bytes} bytes) as generation {}{}",
            report.generation,
            diagnostics(report)
        ),
        ClusterApplyOutcome::Unchanged => log::debug!(
            "the daemon runs the cluster's objects already (generation {})",
            report.generation
        ),
        ClusterApplyOutcome::Refused => log::warn!(
            "the daemon refused the cluster's objects and keeps generation {}: {}",
            report.generation,
            report.error.as_deref().unwrap_or("no reason given")
        ),
    }
}

fn diagnostics(report: &ClusterApplyReport) -> String {
    if report.diagnostics.is_empty() {
        String::new()
    } else {
        format!("; {}", report.diagnostics.join("; "))
    }
}

/// Carries out planned status writes while this sidecar holds the Lease.
async fn write_statuses(
    client: Client,
    leader: watch::Receiver<bool>,
    mut writes: mpsc::UnboundedReceiver<(ApiResource, StatusWrite)>,
) {
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    while let Some((resource, write)) = writes.recv().await {
        if !*leader.borrow() {
            continue;
        }
        let api: Api<DynamicObject> = if write.key.namespace.is_empty() {
            Api::all_with(client.clone(), &resource)
        } else {
            Api::namespaced_with(client.clone(), &write.key.namespace, &resource)
        };
        let what = format!("{} {}", write.kind.kind, write.key);
        match api
            .patch_status(&write.key.name, &params, &Patch::Merge(write.body()))
            .await
        {
            Ok(_) => log::debug!("wrote the status of {what}"),
            // Changed since it was read: the watch brings the new version
            // and the core plans again against it.
            Err(kube::Error::Api(s)) if s.is_conflict() => {
                log::debug!("status of {what} changed meanwhile: planning again")
            }
            Err(kube::Error::Api(s)) if s.is_not_found() => {
                log::debug!("{what} is gone: no status to write")
            }
            Err(error) => log::warn!("writing the status of {what}: {error}"),
        }
    }
}
