//! One task per watched kind: discovery picks the version the API server
//! serves, then kube-rs's watcher lists and watches it, reconnecting with
//! its default backoff (client-go's reflector parameters) and relisting
//! from scratch when the server answers 410 Gone. What the watch says goes
//! to the sidecar's core as `Message`s; this module keeps no state of its
//! own beyond the current attempt.

use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use tokio::sync::mpsc;

use crate::kinds::WatchedKind;
use crate::store::Change;

#[derive(Debug)]
pub enum Message {
    /// The kind is served under this resource; its watch starts.
    Served(&'static WatchedKind, ApiResource),
    /// The API server serves none of the kind's versions.
    NotServed(&'static WatchedKind),
    Change(&'static WatchedKind, Change),
}

/// Watches `kind` until `events` closes.
pub async fn watch_kind(
    client: Client,
    kind: &'static WatchedKind,
    rediscover: Duration,
    events: mpsc::UnboundedSender<Message>,
) {
    let mut reported_missing = false;
    let resource = loop {
        match discover(&client, kind).await {
            Ok(Some(resource)) => break resource,
            Ok(None) => {
                if !reported_missing {
                    log::info!(
                        "the API server serves no {} ({}): reading none, looking again every {}s",
                        kind.kind,
                        kind.versions
                            .iter()
                            .map(|v| kind.api_version(v))
                            .collect::<Vec<_>>()
                            .join(" or "),
                        rediscover.as_secs()
                    );
                    reported_missing = true;
                    if events.send(Message::NotServed(kind)).is_err() {
                        return;
                    }
                }
                tokio::time::sleep(rediscover).await;
            }
            Err(error) => {
                log::warn!(
                    "discovering {} (retrying in {}s): {error}",
                    kind.kind,
                    DISCOVERY_RETRY.as_secs()
                );
                tokio::time::sleep(DISCOVERY_RETRY).await;
            }
        }
    };
    log::info!("watching {} {}", resource.api_version, resource.plural);
    if events
        .send(Message::Served(kind, resource.clone()))
        .is_err()
    {
        return;
    }
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut failing = false;
    while let Some(item) = stream.next().await {
        let change = match item {
            Ok(event) => {
                if failing {
                    log::info!("watch of {} is back", kind.kind);
                    failing = false;
                }
                to_change(event)
            }
            Err(error) if is_gone(&error) => {
                // Routine: the watch fell behind the server's history. The
                // watcher relists; the kind's last complete set stands in
                // until that list completes.
                log::info!("watch of {} expired (410 Gone): relisting", kind.kind);
                continue;
            }
            Err(error) => {
                // Once per outage at warn: the stream retries with backoff,
                // and every failed attempt would log again.
                if failing {
                    log::debug!("watch of {}: {error}", kind.kind);
                } else {
                    log::warn!(
                        "watch of {} failed, keeping its last complete list and retrying: {error}",
                        kind.kind
                    );
                    failing = true;
                }
                continue;
            }
        };
        let Some(change) = change else { continue };
        if events.send(Message::Change(kind, change)).is_err() {
            return;
        }
    }
}

const DISCOVERY_RETRY: Duration = Duration::from_secs(2);

/// The first of `kind`'s versions the server serves, `None` if it serves
/// none of them, an error if the server could not be asked.
async fn discover(client: &Client, kind: &WatchedKind) -> Result<Option<ApiResource>, kube::Error> {
    for version in kind.versions {
        let gvk = GroupVersionKind::gvk(kind.group, version, kind.kind);
        match kube::discovery::pinned_kind(client, &gvk).await {
            Ok((resource, _)) => return Ok(Some(resource)),
            Err(kube::Error::Api(status)) if status.is_not_found() => continue,
            Err(kube::Error::Discovery(_)) => continue,
            Err(error) => return Err(error),
        }
    }
    Ok(None)
}

fn is_gone(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::InitialListFailed(kube::Error::Api(status)) => status.code == 410,
        _ => false,
    }
}

fn to_change(event: Event<DynamicObject>) -> Option<Change> {
    let value = |object: DynamicObject| serde_json::to_value(object).ok();
    Some(match event {
        Event::Init => Change::Init,
        Event::InitApply(object) => Change::InitApply(value(object)?),
        Event::InitDone => Change::InitDone,
        Event::Apply(object) => Change::Apply(value(object)?),
        Event::Delete(object) => Change::Delete(value(object)?),
    })
}
