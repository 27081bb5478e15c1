//! One status writer among the LB nodes: a `coordination.k8s.io/v1` Lease,
//! held by the sidecar that last renewed it.
//!
//! The scheme is client-go's `leaderelection` with a Lease lock: the
//! holder renews every few seconds with a replace that carries the Lease's
//! resourceVersion, so of two sidecars racing for it the API server lets
//! one win and answers the other 409 Conflict. A sidecar takes the Lease
//! over when its holder has not renewed for `leaseDurationSeconds`: by the
//! Lease's `renewTime` and, like client-go's observed time, by how long
//! this sidecar has seen the record unchanged, so a clock running ahead of
//! the holder's cannot steal a live Lease. A holder that cannot renew
//! within the renew deadline stops writing before anyone may take over;
//! one that stops cleanly releases the Lease so the next takes it at once.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// `leaseDurationSeconds` written to the Lease.
    pub duration: Duration,
    /// How often the holder renews and the others look.
    pub retry: Duration,
    /// A holder that has not renewed for this long stops writing; shorter
    /// than `duration`, so it stops before another may take over.
    pub renew_deadline: Duration,
}

impl LeaseConfig {
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        LeaseConfig {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration: Duration::from_secs(15),
            retry: Duration::from_secs(5),
            renew_deadline: Duration::from_secs(10),
        }
    }
}

/// What to do about the Lease as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No Lease yet: create it, held by us.
    Create,
    /// We hold it: renew.
    Renew,
    /// Released, or its holder stopped renewing: take it.
    TakeOver,
    /// Someone else holds it and renews it.
    Follow { holder: String },
}

/// When this sidecar last saw the Lease record change.
#[derive(Debug, Default)]
pub struct Observer {
    last: Option<(Option<String>, Option<String>)>,
    since: Option<Instant>,
}

impl Observer {
    /// Notes the Lease as read at `now`; returns how long its holder and
    /// renewTime have been what they are now, as far as this sidecar saw.
    pub fn observe(&mut self, spec: Option<&LeaseSpec>, now: Instant) -> Duration {
        let record = spec.map(|s| {
            (
                s.holder_identity.clone(),
                s.renew_time.as_ref().map(|t| t.0.to_string()),
            )
        });
        let record = record.unwrap_or((None, None));
        if self.last.as_ref() != Some(&record) {
            self.last = Some(record);
            self.since = Some(now);
        }
        now.saturating_duration_since(self.since.unwrap_or(now))
    }
}

/// The decision for `lease` as read at wall time `now`, its record
/// unchanged for `unchanged_for` as this sidecar saw it.
pub fn decide(
    lease: Option<&Lease>,
    identity: &str,
    now: jiff::Timestamp,
    unchanged_for: Duration,
    default_duration: Duration,
) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.unwrap_or_default();
    if holder.is_empty() {
        return Decision::TakeOver;
    }
    if holder == identity {
        return Decision::Renew;
    }
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or(default_duration);
    let lapsed_by_clock = match spec.renew_time {
        None => true,
        Some(MicroTime(renewed)) => {
            let expiry = jiff::SignedDuration::try_from(duration)
                .ok()
                .and_then(|d| renewed.checked_add(d).ok());
            expiry.is_none_or(|expiry| expiry < now)
        }
    };
    if lapsed_by_clock && unchanged_for >= duration {
        Decision::TakeOver
    } else {
        Decision::Follow { holder }
    }
}

/// Runs the election until `stop` turns true, publishing on `leader`
/// whether this sidecar holds the Lease; releases it on the way out.
pub async fn run(
    client: Client,
    config: LeaseConfig,
    leader: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let mut observer = Observer::default();
    let mut last_renewed: Option<Instant> = None;
    let mut last_holder: Option<String> = None;
    loop {
        match try_acquire_or_renew(&api, &config, &mut observer).await {
            Ok(Attempt::Holding) => {
                if !*leader.borrow() {
                    log::info!(
                        "holding Lease {}/{} as {}: this sidecar writes status",
                        config.namespace,
                        config.name,
                        config.identity
                    );
                }
                last_renewed = Some(Instant::now());
                leader.send_replace(true);
            }
            Ok(Attempt::HeldBy(holder)) => {
                if *leader.borrow() || last_holder.as_ref() != Some(&holder) {
                    log::info!(
                        "Lease {}/{} is held by {holder}: it writes status",
                        config.namespace,
                        config.name
                    );
                }
                last_holder = Some(holder);
                last_renewed = None;
                leader.send_replace(false);
            }
            Err(error) => {
                log::warn!("Lease {}/{}: {error:#}", config.namespace, config.name);
                let lapsed = last_renewed.is_none_or(|t| t.elapsed() >= config.renew_deadline);
                if lapsed && *leader.borrow() {
                    log::warn!(
                        "could not renew the Lease within {:?}: no longer writing status",
                        config.renew_deadline
                    );
                    leader.send_replace(false);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(config.retry) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    if *leader.borrow() {
        leader.send_replace(false);
        if let Err(error) = release(&api, &config).await {
            log::warn!(
                "releasing Lease {}/{}: {error:#}",
                config.namespace,
                config.name
            );
        }
    }
}

enum Attempt {
    Holding,
    HeldBy(String),
}

async fn try_acquire_or_renew(
    api: &Api<Lease>,
    config: &LeaseConfig,
    observer: &mut Observer,
) -> anyhow::Result<Attempt> {
    use anyhow::Context;
    let current = api.get_opt(&config.name).await.context("reading")?;
    let unchanged_for = observer.observe(
        current.as_ref().and_then(|l| l.spec.as_ref()),
        Instant::now(),
    );
    let now = jiff::Timestamp::now();
    let decision = decide(
        current.as_ref(),
        &config.identity,
        now,
        unchanged_for,
        config.duration,
    );
    let seconds = i32::try_from(config.duration.as_secs()).unwrap_or(i32::MAX);
    let written = match decision {
        Decision::Follow { holder } => return Ok(Attempt::HeldBy(holder)),
        Decision::Create => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(config.name.clone()),
                    namespace: Some(config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(config.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            api.create(&PostParams::default(), &lease).await
        }
        Decision::Renew | Decision::TakeOver => {
            let mut lease = current.unwrap_or_default();
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if decision == Decision::TakeOver {
                spec.holder_identity = Some(config.identity.clone());
                spec.acquire_time = Some(MicroTime(now));
                spec.lease_transitions =
                    Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
            }
            spec.lease_duration_seconds = Some(seconds);
            spec.renew_time = Some(MicroTime(now));
            // The resourceVersion read above makes this a compare-and-swap.
            api.replace(&config.name, &PostParams::default(), &lease)
                .await
        }
    };
    match written {
        Ok(_) => Ok(Attempt::Holding),
        Err(kube::Error::Api(status)) if status.is_conflict() || status.is_already_exists() => {
            // Someone else wrote first: they hold it, as the next read shows.
            Ok(Attempt::HeldBy("another sidecar".to_owned()))
        }
        Err(error) => Err(error).context("writing"),
    }
}

/// Empties the holder so the next sidecar need not wait for expiry, as
/// client-go's ReleaseOnCancel does.
async fn release(api: &Api<Lease>, config: &LeaseConfig) -> anyhow::Result<()> {
    use anyhow::Context;
    let Some(mut lease) = api.get_opt(&config.name).await.context("reading")? else {
        return Ok(());
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
    api.replace(&config.name, &PostParams::default(), &lease)
        .await
        .context("writing")?;
    log::info!("released Lease {}/{}", config.namespace, config.name);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIFTEEN: Duration = Duration::from_secs(15);

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().unwrap()
    }

    fn lease(holder: Option<&str>, renewed: Option<&str>) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: Some(15),
                renew_time: renewed.map(|t| MicroTime(at(t))),
                ..LeaseSpec::default()
            }),
        }
    }

    const NOW: &str = "2026-12-06T20:00:30Z";

    #[test]
    fn no_lease_is_created() {
        assert_eq!(
            decide(None, "a", at(NOW), Duration::ZERO, FIFTEEN),
            Decision::Create
        );
    }

    #[test]
    fn our_own_lease_is_renewed() {
        let l = lease(Some("a"), Some("2026-12-06T20:00:00Z"));
        assert_eq!(
            decide(Some(&l), "a", at(NOW), Duration::ZERO, FIFTEEN),
            Decision::Renew
        );
    }

    #[test]
    fn a_lease_renewed_within_its_duration_is_followed() {
        let l = lease(Some("b"), Some("2026-12-06T20:00:20Z"));
        assert_eq!(
            decide(Some(&l), "a", at(NOW), FIFTEEN, FIFTEEN),
            Decision::Follow { holder: "b".into() }
        );
    }

    #[test]
    fn an_expired_lease_is_taken_over_once_seen_unchanged_for_its_duration() {
        let l = lease(Some("b"), Some("2026-12-06T20:00:10Z"));
        assert_eq!(
            decide(Some(&l), "a", at(NOW), Duration::from_secs(3), FIFTEEN),
            Decision::Follow { holder: "b".into() },
            "just seen: our clock may be ahead of the holder's"
        );
        assert_eq!(
            decide(Some(&l), "a", at(NOW), FIFTEEN, FIFTEEN),
            Decision::TakeOver
        );
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let l = lease(None, Some("2026-12-06T20:00:29Z"));
        assert_eq!(
            decide(Some(&l), "a", at(NOW), Duration::ZERO, FIFTEEN),
            Decision::TakeOver
        );
        let l = lease(Some(""), Some("2026-12-06T20:00:29Z"));
        assert_eq!(
            decide(Some(&l), "a", at(NOW), Duration::ZERO, FIFTEEN),
            Decision::TakeOver
        );
    }

    #[test]
    fn the_observer_counts_from_the_last_change_it_saw() {
        let mut observer = Observer::default();
        let t0 = Instant::now();
        let first = lease(Some("b"), Some("2026-12-06T20:00:10Z"));
        assert_eq!(observer.observe(first.spec.as_ref(), t0), Duration::ZERO);
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(
            observer.observe(first.spec.as_ref(), t1),
            Duration::from_secs(5)
        );
        let renewed = lease(Some("b"), Some("2026-12-06T20:00:15Z"));
        assert_eq!(observer.observe(renewed.spec.as_ref(), t1), Duration::ZERO);
    }
}
