//! `mailsec-operator run`: the operator.

use std::sync::Arc;

use clap::Args;
use kube::client::ClientBuilder;

use super::{PolicyArgs, SettingsError};
use crate::controller::api_counter::{ApiCounters, CountingLayer};
use crate::controller::{self, Settings};
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
    /// Name of this instance in Events (in a cluster: the pod name).
    #[arg(long, env = "POD_NAME")]
    pub instance: Option<String>,
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
}

/// Starts the operator and runs until SIGTERM or Ctrl-C.
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    telemetry::init(args.log_format);
    let policy = args.policy.policy()?;
    let config = kube::Config::infer().await?;
    let counters = Arc::new(ApiCounters::default());
    let client = ClientBuilder::try_from(config)?
        .with_layer(&CountingLayer {
            counters: counters.clone(),
        })
        .build();
    tracing::info!(
        warning_period = %crate::engine::policy::format_period(policy.warning_period),
        grace_period = %crate::engine::policy::format_period(policy.grace_period),
        base_product = %policy.catalogue.base,
        "mailsec-operator starting"
    );
    let settings = Settings {
        policy,
        concurrency: args.concurrency,
        instance: args.instance,
    };
    controller::run(client, settings, shutdown_signal()).await;
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
