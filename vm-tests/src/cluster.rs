//! Talking to a `switchyard run --cluster` daemon as `switchyard-kube`
//! does: one `ApplyCluster` request over the control socket, and readers
//! for the statuses in its answer.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use switchyard_proto::client;
use switchyard_proto::{ClusterApplyReport, ClusterConfig, Request, Response};

/// Sends `contents` (multi-document YAML, or JSON documents) as the
/// objects of the cluster `source` and returns the daemon's answer; a
/// refusal by the daemon of the request itself (not of the objects) is an
/// error.
pub fn apply_cluster(socket: &Path, source: &str, contents: &str) -> Result<ClusterApplyReport> {
    let request = Request::ApplyCluster(ClusterConfig {
        source: source.to_owned(),
        contents: contents.to_owned(),
    });
    match client::request(socket, &request)
        .with_context(|| format!("ApplyCluster on {}", socket.display()))?
    {
        Response::ApplyCluster(report) => Ok(report),
        other => bail!("ApplyCluster answered with {other:?}"),
    }
}

/// The status the answer carries for `kind` `namespace/name` (an empty
/// namespace for cluster-scoped kinds).
pub fn status_of<'a>(
    report: &'a ClusterApplyReport,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result<&'a Value> {
    report
        .statuses
        .iter()
        .find(|s| {
            s["kind"] == kind
                && s["metadata"]["name"] == name
                && s["metadata"]["namespace"].as_str().unwrap_or("") == namespace
        })
        .map(|s| &s["status"])
        .ok_or_else(|| {
            anyhow!(
                "no status for {kind} {namespace}/{name} among {} statuses: {:?}",
                report.statuses.len(),
                report.statuses
            )
        })
}

/// The condition `kind` of a condition list (`status.conditions`, a
/// listener's or a route parent's).
pub fn condition<'a>(conditions: &'a Value, kind: &str) -> Result<&'a Value> {
    conditions
        .as_array()
        .and_then(|list| list.iter().find(|c| c["type"] == kind))
        .ok_or_else(|| anyhow!("no {kind} condition in {conditions}"))
}
