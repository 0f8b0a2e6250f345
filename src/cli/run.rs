//! `mailsec-operator run`: the operator.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use kube::client::ClientBuilder;

use super::{PolicyArgs, SettingsError};
use crate::controller::api_counter::{ApiCounters, CountingLayer};
use crate::controller::leader::{self, LeaderElection, MIN_LEASE_DURATION};
use crate::controller::{self, Settings};
use crate::metrics::{Metrics, Role};
use crate::server::{BindError, Server};
use crate::telemetry::{self, LogFormat};

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Reconciles in flight at once, per controller.
    #[arg(long, env = "MAILSEC_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,
    /// Log format.
    #[arg(long, env = "MAILSEC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// Name of this instance in Events and in the leader Lease (in a cluster: the pod name).
    #[arg(long, env = "POD_NAME")]
    pub instance: Option<String>,
    /// Run the controllers only while holding the leader Lease, so that several replicas can
    /// run with one active (the Helm chart turns it on).
    #[arg(long, env = "MAILSEC_LEADER_ELECTION")]
    pub leader_election: bool,
    /// Name of the leader Lease.
    #[arg(long, env = "MAILSEC_LEASE_NAME", default_value = "mailsec-operator")]
    pub lease_name: String,
    /// Namespace of the leader Lease [default: POD_NAMESPACE, else `default`].
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// How long the Lease stays valid after a renewal: a standby takes over at most this long
    /// after the leader died (whole seconds, at least 2s).
    #[arg(long, env = "MAILSEC_LEASE_DURATION", default_value = "15s", value_parser = parse_lease_duration)]
    pub lease_duration: Duration,
    /// Where to serve /metrics, /healthz and /readyz (port 0: any free port, logged at start).
    #[arg(long, env = "MAILSEC_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
}

/// Parses `--lease-duration`: a period like `15s`, whole seconds, at least 2 s.
pub fn parse_lease_duration(text: &str) -> Result<Duration, String> {
    let d = crate::engine::parse_period(text)
        .map_err(|e| e.to_string())?
        .to_std()
        .map_err(|_| "the lease duration must be positive".to_string())?;
    if d < MIN_LEASE_DURATION || d.subsec_nanos() != 0 {
        return Err(format!(
            "the lease duration must be whole seconds, at least {}s",
            MIN_LEASE_DURATION.as_secs()
        ));
    }
    Ok(d)
}

/// Everything the operator runs with, resolved from the command line.
#[derive(Clone, Debug)]
pub struct Operator {
    pub settings: Settings,
    pub metrics_addr: SocketAddr,
    /// `None`: no leader election, this instance always runs the controllers.
    pub leader_election: Option<LeaderElection>,
}

impl RunArgs {
    /// Resolves the policy and the leader-election settings.
    pub fn operator(&self) -> Result<Operator, SettingsError> {
        let policy = self.policy.policy()?;
        let leader_election = self.leader_election.then(|| LeaderElection {
            lease_name: self.lease_name.clone(),
            lease_namespace: self
                .lease_namespace
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "default".to_string()),
            identity: leader::identity(self.instance.as_deref()),
            lease_duration: self.lease_duration,
        });
        Ok(Operator {
            settings: Settings {
                policy,
                concurrency: self.concurrency,
                instance: self.instance.clone(),
            },
            metrics_addr: self.metrics_addr,
            leader_election,
        })
    }
}

/// Why the operator could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("no Kubernetes configuration (KUBECONFIG, ~/.kube/config or in-cluster): {0}")]
    Config(#[from] kube::config::InferConfigError),
    #[error("could not build the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    #[error(transparent)]
    Bind(#[from] BindError),
}

/// Starts the operator and runs until SIGTERM or Ctrl-C.
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    telemetry::init(args.log_format);
    let operator = args.operator()?;
    let config = kube::Config::infer().await?;
    let counters = Arc::new(ApiCounters::default());
    let client = ClientBuilder::try_from(config)?
        .with_layer(&CountingLayer {
            counters: counters.clone(),
        })
        .build();
    serve(client, counters, operator, shutdown_signal()).await
}

/// Runs the operator with `client` (whose requests `counters` count) until `shutdown`
/// resolves: the metrics and health endpoint, and the controllers (under leader election when
/// configured).
pub async fn serve(
    client: kube::Client,
    counters: Arc<ApiCounters>,
    operator: Operator,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let Operator {
        settings,
        metrics_addr,
        leader_election,
    } = operator;
    let policy = &settings.policy;
    tracing::info!(
        warning_period = %crate::engine::policy::format_period(policy.warning_period),
        grace_period = %crate::engine::policy::format_period(policy.grace_period),
        base_product = %policy.catalogue.base,
        leader_election = leader_election.is_some(),
        "mailsec-operator starting"
    );
    let metrics = Arc::new(Metrics::new(Some(counters.clone())));
    let server = Server::bind(metrics_addr).await?;
    tracing::info!(addr = %server.local_addr(), "serving /metrics, /healthz and /readyz");
    let serving = server.serve(metrics.clone());
    let operating = async {
        match leader_election {
            None => {
                metrics.set_role(Role::Leading);
                controller::run_observed(client, settings, metrics.clone(), shutdown).await;
            }
            Some(election) => {
                leader::run(
                    client.clone(),
                    election,
                    metrics.clone(),
                    shutdown,
                    |stop| {
                        controller::run_observed(
                            client.clone(),
                            settings.clone(),
                            metrics.clone(),
                            stop,
                        )
                    },
                )
                .await;
            }
        }
    };
    tokio::select! {
        _ = operating => {}
        _ = serving => {}
    }
    tracing::info!(
        writes = counters.writes(),
        reads = counters.reads(),
        watches = counters.watches(),
        "mailsec-operator stopped"
    );
    Ok(())
}

/// Resolves on SIGTERM (Kubernetes stopping the pod) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
