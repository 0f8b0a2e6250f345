//! The kubeconfig flags every command that talks to a cluster takes, as `kubectl` spells them:
//! `--kubeconfig`, `--context`, `--cluster`, `--user`, `--as`, `--as-group`, `--request-timeout`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::controller::lenient::Lenient;

/// Where the cluster is and who talks to it.
#[derive(Args, Debug, Clone, Default)]
pub struct ClusterArgs {
    /// Path to the kubeconfig file [default: $KUBECONFIG, else ~/.kube/config, else in-cluster].
    #[arg(long, global = true, help_heading = "Cluster")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use [default: its current context].
    #[arg(long, global = true, help_heading = "Cluster")]
    pub context: Option<String>,
    /// The kubeconfig cluster to use.
    #[arg(long, global = true, help_heading = "Cluster")]
    pub cluster: Option<String>,
    /// The kubeconfig user to use.
    #[arg(long, global = true, help_heading = "Cluster")]
    pub user: Option<String>,
    /// User to impersonate (needs the `impersonate` permission).
    #[arg(long = "as", global = true, help_heading = "Cluster")]
    pub as_user: Option<String>,
    /// Group to impersonate; repeat for several groups.
    #[arg(long = "as-group", global = true, help_heading = "Cluster")]
    pub as_group: Vec<String>,
    /// Give up on a request to the API server after this long, e.g. 30s.
    #[arg(long, global = true, value_parser = parse_timeout, help_heading = "Cluster")]
    pub request_timeout: Option<Duration>,
}

/// Every object of kind `K` in the cluster, each decoded on its own: an object stored that this
/// version's types can not hold (a value outside a field's range, settings nested deeper than
/// the decoder allows) is left out and named on standard error, so that one such object does
/// not take `status`, `report` or `whatif` away for all the others. The operator skips and
/// reports the same objects (a `Stalled` condition with reason `InvalidObject`).
pub async fn list_readable<K>(client: &kube::Client) -> Result<Vec<K>, kube::Error>
where
    K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned + Clone + std::fmt::Debug,
{
    let api: kube::Api<Lenient<K>> = kube::Api::all(client.clone());
    let list = api.list(&kube::api::ListParams::default()).await?;
    Ok(readable(
        K::kind(&()).as_ref(),
        list.items,
        &mut std::io::stderr(),
    ))
}

/// The decoded objects; a line on `warnings` for each one that could not be decoded.
fn readable<K>(kind: &str, items: Vec<Lenient<K>>, warnings: &mut dyn std::io::Write) -> Vec<K> {
    let mut good = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Lenient::Good(k) => good.push(k),
            Lenient::Bad(bad) => {
                // Nothing to do if standard error is closed: the object is still left out.
                let _ = writeln!(
                    warnings,
                    "warning: {kind} {:?} left out: it can not be read ({})",
                    bad.meta.name.as_deref().unwrap_or("<no name>"),
                    bad.error
                );
            }
        }
    }
    good
}

/// Why no client could be made.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot read the kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        source: kube::config::KubeconfigError,
    },
    #[error("no usable kubeconfig context: {0}")]
    Context(kube::config::KubeconfigError),
    #[error("no Kubernetes configuration (KUBECONFIG, ~/.kube/config or in-cluster): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("could not build the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    crate::engine::parse_period(text)
        .map_err(|e| e.to_string())?
        .to_std()
        .map_err(|_| "the timeout must be positive".to_string())
}

impl ClusterArgs {
    fn options(&self) -> kube::config::KubeConfigOptions {
        kube::config::KubeConfigOptions {
            context: self.context.clone(),
            cluster: self.cluster.clone(),
            user: self.user.clone(),
        }
    }

    /// True when a flag names a kubeconfig or a part of it (then in-cluster is not tried).
    fn names_kubeconfig(&self) -> bool {
        self.kubeconfig.is_some()
            || self.context.is_some()
            || self.cluster.is_some()
            || self.user.is_some()
    }

    /// The client configuration: `--kubeconfig` (or the usual search: `$KUBECONFIG`,
    /// `~/.kube/config`, then the in-cluster service account), the chosen context, cluster and
    /// user, impersonation and the request timeout.
    pub async fn config(&self) -> Result<kube::Config, ClusterError> {
        let options = self.options();
        let mut config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                    ClusterError::Kubeconfig {
                        path: path.display().to_string(),
                        source,
                    }
                })?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(ClusterError::Context)?
            }
            None if self.names_kubeconfig() => kube::Config::from_kubeconfig(&options)
                .await
                .map_err(ClusterError::Context)?,
            None => kube::Config::infer().await?,
        };
        if let Some(user) = &self.as_user {
            config.auth_info.impersonate = Some(user.clone());
        }
        if !self.as_group.is_empty() {
            config.auth_info.impersonate_groups = Some(self.as_group.clone());
        }
        if let Some(timeout) = self.request_timeout {
            config.read_timeout = Some(timeout);
            config.write_timeout = Some(timeout);
            config.connect_timeout = Some(timeout);
        }
        Ok(config)
    }

    /// A client for the cluster these flags name.
    pub async fn client(&self) -> Result<kube::Client, ClusterError> {
        kube::Client::try_from(self.config().await?).map_err(ClusterError::Client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECONFIG: &str = r#"apiVersion: v1
kind: Config
clusters:
- name: one
  cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}
- name: two
  cluster: {server: "https://127.0.0.2:6443", insecure-skip-tls-verify: true}
users:
- name: admin
  user: {token: abc}
contexts:
- name: first
  context: {cluster: one, user: admin}
- name: second
  context: {cluster: two, user: admin}
current-context: first
"#;

    #[tokio::test]
    async fn kubeconfig_context_and_impersonation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config");
        std::fs::write(&path, KUBECONFIG).expect("write");
        let args = ClusterArgs {
            kubeconfig: Some(path.clone()),
            context: Some("second".into()),
            as_user: Some("jane".into()),
            as_group: vec!["auditors".into(), "ops".into()],
            request_timeout: Some(Duration::from_secs(7)),
            ..Default::default()
        };
        let config = args.config().await.expect("config");
        assert_eq!(config.cluster_url.host(), Some("127.0.0.2"));
        assert_eq!(config.auth_info.impersonate.as_deref(), Some("jane"));
        assert_eq!(
            config.auth_info.impersonate_groups,
            Some(vec!["auditors".to_string(), "ops".to_string()])
        );
        assert_eq!(config.read_timeout, Some(Duration::from_secs(7)));

        let err = ClusterArgs {
            kubeconfig: Some(path),
            context: Some("third".into()),
            ..Default::default()
        }
        .config()
        .await
        .expect_err("no such context");
        assert!(err.to_string().contains("third"), "{err}");
    }
}
