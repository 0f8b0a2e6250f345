//! `version`: this CLI's version and, unless `--client`, the Kubernetes API server's and the
//! operator's (from its Deployment, see [`super::check`]).

use std::io::Write;

use clap::{Args, ValueEnum};
use serde::Serialize;

use super::check::{OperatorDeployment, find_operators};
use super::cluster::{ClusterArgs, ClusterError};

#[derive(Args, Debug)]
pub struct VersionArgs {
    /// Only this CLI's version; do not ask the cluster.
    #[arg(long)]
    pub client: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = VersionFormat::Text)]
    pub output: VersionFormat,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionFormat {
    Text,
    Json,
    Yaml,
}

/// Why the versions could not all be told.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("could not ask the API server for its version: {0}")]
    Kube(#[from] kube::Error),
    #[error("could not write the output: {0}")]
    Output(String),
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Versions {
    client: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    kubernetes: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    operator: Option<OperatorDeployment>,
    #[serde(skip_serializing_if = "Option::is_none")]
    operator_unknown: Option<String>,
}

/// Runs `version`; `bin` is the name of the program (`kubectl-mailsec`, `mailsec-operator`).
pub async fn run(args: &VersionArgs, bin: &str, out: &mut dyn Write) -> Result<(), VersionError> {
    let mut v = Versions {
        client: env!("CARGO_PKG_VERSION").to_string(),
        kubernetes: None,
        operator: None,
        operator_unknown: None,
    };
    if !args.client {
        let client = args.cluster.client().await?;
        v.kubernetes = Some(client.apiserver_version().await?.git_version);
        match find_operators(&client).await {
            Ok(list) => match list.into_iter().next() {
                Some(d) => v.operator = Some(d),
                None => {
                    v.operator_unknown = Some(format!(
                        "no Deployment labelled {}",
                        super::check::NAME_LABEL
                    ))
                }
            },
            Err(e) => v.operator_unknown = Some(format!("could not list Deployments: {e}")),
        }
    }
    let output = |e: &dyn std::fmt::Display| VersionError::Output(e.to_string());
    let text = match args.output {
        VersionFormat::Json => serde_json::to_string_pretty(&v)
            .map(|s| s + "\n")
            .map_err(|e| output(&e))?,
        VersionFormat::Yaml => serde_yaml::to_string(&v).map_err(|e| output(&e))?,
        VersionFormat::Text => {
            let mut s = format!("Client:     {bin} {}\n", v.client);
            if let Some(k) = &v.kubernetes {
                s.push_str(&format!("Kubernetes: {k}\n"));
            }
            match (&v.operator, &v.operator_unknown) {
                (Some(d), _) => s.push_str(&format!(
                    "Operator:   {} (Deployment {}/{}, image {})\n",
                    d.version.as_deref().unwrap_or("unknown"),
                    d.namespace,
                    d.name,
                    d.image.as_deref().unwrap_or("?")
                )),
                (None, Some(why)) => s.push_str(&format!("Operator:   unknown ({why})\n")),
                (None, None) => {}
            }
            s
        }
    };
    out.write_all(text.as_bytes()).map_err(|e| output(&e))
}
