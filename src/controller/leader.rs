//! Leader election: with several replicas, only the holder of a `coordination.k8s.io/v1` Lease
//! runs the controllers (reconciles and writes); the others stand by and take over when the
//! leader stops renewing it.
//!
//! The Lease is held with [`kube_lease_manager`]: the leader renews it `renew margin` before it
//! expires; a standby grabs it once it has expired (at most the lease duration after the
//! leader's last renewal, plus up to a second of jitter). Around it this module adds:
//! - **fast hand-over**: a leader that shuts down (SIGTERM) stops its controllers first, then
//!   releases the Lease; a standby checks the Lease every *retry period* and takes a released one
//!   at once, instead of waiting for it to expire;
//! - **fencing**: the leader confirms every retry period that the Lease still names it and is
//!   not about to expire; when it can not (the API server is unreachable, renewals fail), it
//!   stops its controllers before the Lease can expire and another instance take over, so two
//!   instances never reconcile at once;
//! - leadership lost → the controllers stop and the instance stands by again (no restart).
//!
//! API calls: `leases` get, create (once, when missing) and patch, in the lease namespace.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::{LeaseCreateMode, LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::metrics::{Metrics, Role};

/// The shortest lease the operator accepts.
pub const MIN_LEASE_DURATION: Duration = Duration::from_secs(2);
/// How long the controllers get to finish the reconciles in flight when they are stopped.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long releasing the Lease may take at shutdown.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the Lease is and how it is held.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub lease_name: String,
    pub lease_namespace: String,
    /// Unique per process: `<pod name or host>-<random>`; see [`identity`].
    pub identity: String,
    /// How long the Lease is valid after a renewal (whole seconds, at least 2).
    pub lease_duration: Duration,
}

impl LeaderElection {
    fn duration_secs(&self) -> u64 {
        self.lease_duration
            .as_secs()
            .max(MIN_LEASE_DURATION.as_secs())
    }

    /// The leader renews this long before the Lease expires (a third of it, at least 1 s).
    pub fn renew_margin(&self) -> Duration {
        Duration::from_secs((self.duration_secs() / 3).max(1))
    }

    /// How often a standby looks for a released Lease and the leader confirms it still holds
    /// it: a quarter of the lease duration, at most 2 s.
    pub fn retry_period(&self) -> Duration {
        (Duration::from_secs(self.duration_secs()) / 4).min(Duration::from_secs(2))
    }
}

/// A process-unique holder identity: `base` (the pod name) or the host name, plus a random
/// suffix, so a restarted container never mistakes its predecessor's Lease for its own.
pub fn identity(base: Option<&str>) -> String {
    let base = base
        .map(str::to_string)
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "mailsec-operator".to_string());
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_i64(Utc::now().timestamp_nanos_opt().unwrap_or_default());
    format!("{base}-{:08x}", hasher.finish() as u32)
}

enum Outcome {
    Shutdown,
    WorkEnded,
    Lost(String),
}

/// Runs `work` whenever this instance holds the Lease, until `shutdown` resolves.
///
/// `work(stop)` must run the controllers until `stop` resolves and then return after the
/// reconciles in flight have finished; it may be called again after a lost leadership.
pub async fn run<W, F>(
    client: Client,
    config: LeaderElection,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
    mut work: W,
) where
    W: FnMut(futures::future::BoxFuture<'static, ()>) -> F,
    F: Future<Output = ()>,
{
    let api: Api<Lease> = Api::namespaced(client.clone(), &config.lease_namespace);
    let retry = config.retry_period();
    let mut shutdown = pin!(shutdown);
    tracing::info!(
        lease = %format!("{}/{}", config.lease_namespace, config.lease_name),
        identity = %config.identity,
        lease_duration = ?config.lease_duration,
        "leader election: joining"
    );
    loop {
        // Standing by.
        let started = tokio::select! {
            m = start_manager(&client, &config) => Some(m),
            _ = &mut shutdown => None,
        };
        let Some((mut leading, handle)) = started else {
            return;
        };
        metrics.set_role(Role::Standby);
        let mut tick = tokio::time::interval(retry);
        // The holder seen at the last check: a hand-over is a holder followed by none (a free
        // Lease seen first is the manager's to take; rebuilding it then would only race it).
        let mut seen_holder = false;
        let elected = loop {
            if *leading.borrow_and_update() {
                break true;
            }
            tokio::select! {
                changed = leading.changed() => if changed.is_err() {
                    // The manager's task ended (it only does on an error): start another.
                    break false;
                },
                _ = tick.tick() => match lease_holder(&api, &config).await {
                    Some(Some(_)) => seen_holder = true,
                    Some(None) if seen_holder => {
                        tracing::debug!("leader election: the lease was released; competing for it now");
                        break false;
                    }
                    _ => {}
                },
                _ = &mut shutdown => {
                    stop_manager(leading, handle).await;
                    return;
                }
            }
        };
        if !elected {
            stop_manager(leading, handle).await;
            continue;
        }

        // Leading.
        tracing::info!(identity = %config.identity, "leader election: became the leader; starting the controllers");
        metrics.set_role(Role::Leading);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let mut task = Box::pin(work(Box::pin(async move {
            let _ = stop_rx.await;
        })));
        let mut valid_until =
            Utc::now() + chrono::TimeDelta::from_std(config.lease_duration).unwrap_or_default();
        let fence = chrono::TimeDelta::from_std(config.renew_margin() / 2).unwrap_or_default();
        let outcome = loop {
            tokio::select! {
                _ = &mut task => break Outcome::WorkEnded,
                _ = &mut shutdown => break Outcome::Shutdown,
                changed = leading.changed() => {
                    if changed.is_err() || !*leading.borrow_and_update() {
                        break Outcome::Lost("the lease is held by another instance".into());
                    }
                }
                _ = tick.tick() => {
                    match tokio::time::timeout(retry, api.get(&config.lease_name)).await {
                        Ok(Ok(lease)) => {
                            let spec = lease.spec.unwrap_or_default();
                            if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
                                break Outcome::Lost(format!("the lease is held by {:?}", spec.holder_identity));
                            }
                            if let (Some(renewed), Some(secs)) = (spec.renew_time, spec.lease_duration_seconds) {
                                let renewed = chrono::DateTime::<Utc>::from_timestamp_micros(renewed.0.as_microsecond()).unwrap_or_default();
                                valid_until = renewed + chrono::TimeDelta::seconds(i64::from(secs));
                            }
                        }
                        Ok(Err(err)) => tracing::warn!(error = %err, "leader election: could not read the lease"),
                        Err(_) => tracing::warn!("leader election: reading the lease timed out"),
                    }
                    if Utc::now() + fence >= valid_until {
                        break Outcome::Lost("the lease could not be renewed in time".into());
                    }
                }
            }
        };
        if !matches!(outcome, Outcome::WorkEnded) {
            drop(stop_tx);
            if tokio::time::timeout(STOP_TIMEOUT, &mut task).await.is_err() {
                tracing::warn!(
                    "leader election: the controllers did not stop in time; abandoning the reconciles in flight"
                );
            }
        }
        drop(task);
        metrics.set_role(Role::Standby);
        match outcome {
            Outcome::Lost(why) => {
                tracing::warn!(reason = %why, "leader election: leadership lost; controllers stopped, standing by");
                stop_manager(leading, handle).await;
            }
            Outcome::Shutdown | Outcome::WorkEnded => {
                stop_manager(leading, handle).await;
                tracing::info!(identity = %config.identity, "leader election: lease released");
                return;
            }
        }
    }
}

/// Builds a lease manager (creating the Lease when missing) and starts its renewal task,
/// retrying with backoff while the API server can not be reached.
async fn start_manager(
    client: &Client,
    config: &LeaderElection,
) -> (
    watch::Receiver<bool>,
    JoinHandle<Result<LeaseManager, LeaseManagerError>>,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let built = LeaseManagerBuilder::new(client.clone(), &config.lease_name)
            .with_namespace(&config.lease_namespace)
            .with_create_mode(LeaseCreateMode::AutoCreate)
            .with_identity(&config.identity)
            .with_duration(config.duration_secs())
            .with_grace(config.renew_margin().as_secs())
            .build()
            .await;
        match built {
            Ok(manager) => return manager.watch().await,
            Err(err) => {
                tracing::warn!(error = %err, retry_in = ?backoff, "leader election: cannot use the lease");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Stops a manager's task; it releases the Lease if this instance holds it.
async fn stop_manager(
    leading: watch::Receiver<bool>,
    handle: JoinHandle<Result<LeaseManager, LeaseManagerError>>,
) {
    drop(leading);
    match tokio::time::timeout(RELEASE_TIMEOUT, handle).await {
        Ok(Ok(Ok(_))) => {}
        Ok(Ok(Err(err))) => {
            tracing::warn!(error = %err, "leader election: releasing the lease failed")
        }
        Ok(Err(err)) => tracing::warn!(error = %err, "leader election: the lease task failed"),
        Err(_) => tracing::warn!("leader election: releasing the lease timed out"),
    }
}

/// The Lease's holder (`Some(None)`: the Lease names none, e.g. it was released), or `None`
/// when the Lease could not be read.
async fn lease_holder(api: &Api<Lease>, config: &LeaderElection) -> Option<Option<String>> {
    match api.get(&config.lease_name).await {
        Ok(lease) => Some(
            lease
                .spec
                .and_then(|s| s.holder_identity)
                .filter(|h| !h.is_empty()),
        ),
        Err(err) => {
            tracing::debug!(error = %err, "leader election: could not read the lease");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_follow_the_lease_duration() {
        let mut c = LeaderElection {
            lease_name: "l".into(),
            lease_namespace: "n".into(),
            identity: identity(Some("pod-a")),
            lease_duration: Duration::from_secs(15),
        };
        assert_eq!(c.renew_margin(), Duration::from_secs(5));
        assert_eq!(c.retry_period(), Duration::from_secs(2));
        c.lease_duration = Duration::from_secs(4);
        assert_eq!(c.renew_margin(), Duration::from_secs(1));
        assert_eq!(c.retry_period(), Duration::from_secs(1));
        c.lease_duration = Duration::from_secs(2);
        assert!(c.renew_margin() < c.lease_duration);
        assert!(c.identity.starts_with("pod-a-"));
        assert_ne!(identity(Some("pod-a")), identity(Some("pod-a")));
    }
}
