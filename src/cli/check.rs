//! `check`: is the operator installed and working? The CRDs are established, the read-only
//! ValidatingAdmissionPolicy is installed and bound, a leader holds the Lease and renews it,
//! the leader's pod is ready, and the versions of this CLI and the operator.
//!
//! Everything is read from the API server; nothing is written. The operator's Deployment (the
//! Helm chart's, labelled `app.kubernetes.io/name=mailsec-operator`) is looked up to find the
//! Lease it uses (`--lease-name`, its namespace) and its version (the
//! `app.kubernetes.io/version` label, else the image tag).

use std::io::Write;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use clap::{Args, ValueEnum};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};
use kube::{Client, CustomResourceExt};
use serde::Serialize;

use super::cluster::{ClusterArgs, ClusterError};
use super::human;
use crate::api::{Subscription, Tenant};

/// The label the Helm chart and `deploy/` put on the operator's objects.
pub const NAME_LABEL: &str = "app.kubernetes.io/name=mailsec-operator";
/// The read-only policy of `deploy/read-only-policy.yaml`; the chart's is `<release>-read-only-settings`.
pub const POLICY_NAME: &str = "mailsec-read-only-settings";
/// The suffix of the chart's policy name.
pub const POLICY_SUFFIX: &str = "-read-only-settings";
/// The operator's default Lease (`run --lease-name`), in `default` unless `POD_NAMESPACE` is set.
pub const DEFAULT_LEASE: &str = "mailsec-operator";

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The read-only ValidatingAdmissionPolicy [default: mailsec-read-only-settings, or the one
    /// named `*-read-only-settings` labelled app.kubernetes.io/name=mailsec-operator].
    #[arg(long)]
    pub policy_name: Option<String>,
    /// The leader Lease [default: the operator Deployment's --lease-name, else mailsec-operator].
    #[arg(long)]
    pub lease_name: Option<String>,
    /// The namespace of the leader Lease [default: the operator Deployment's, else default].
    #[arg(long)]
    pub lease_namespace: Option<String>,
    /// Keep checking (every second) until every check passes or this long has passed, e.g. 2m.
    #[arg(long, value_parser = parse_wait)]
    pub wait: Option<Duration>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = CheckFormat::Text)]
    pub output: CheckFormat,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckFormat {
    /// One line per check.
    Text,
    /// `{"passed": bool, "checks": [{"name", "result", "detail"}]}`.
    Json,
}

fn parse_wait(text: &str) -> Result<Duration, String> {
    crate::engine::parse_period(text)
        .map_err(|e| e.to_string())?
        .to_std()
        .map_err(|_| "the wait must be positive".to_string())
}

/// Why `check` could not run at all (a failed check is not an error).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("could not write the output: {0}")]
    Output(String),
}

/// The outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// Fine.
    Pass,
    /// Worth knowing, not a failure (e.g. the leader runs outside the cluster).
    Warn,
    /// Broken: `check` exits with 1.
    Fail,
}

/// One check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub result: Outcome,
    pub detail: String,
}

impl Check {
    fn new(name: impl Into<String>, result: Outcome, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            result,
            detail: detail.into(),
        }
    }
}

/// The operator's Deployment, as far as `check` and `version` need it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OperatorDeployment {
    pub namespace: String,
    pub name: String,
    pub image: Option<String>,
    /// The `app.kubernetes.io/version` label, else the image tag.
    pub version: Option<String>,
    pub leader_election: bool,
    pub lease_name: Option<String>,
    pub replicas: i32,
    pub ready_replicas: i32,
}

/// The operator Deployments of the cluster (the chart's label), or why they could not be listed.
pub async fn find_operators(client: &Client) -> Result<Vec<OperatorDeployment>, kube::Error> {
    let api: Api<Deployment> = Api::all(client.clone());
    let list = api.list(&ListParams::default().labels(NAME_LABEL)).await?;
    Ok(list.items.iter().map(operator_deployment).collect())
}

fn operator_deployment(d: &Deployment) -> OperatorDeployment {
    let spec = d.spec.as_ref();
    let pod = spec.and_then(|s| s.template.spec.as_ref());
    let container = pod.and_then(|p| {
        p.containers
            .iter()
            .find(|c| c.name == "operator")
            .or(p.containers.first())
    });
    let image = container.and_then(|c| c.image.clone());
    let args: Vec<String> = container
        .map(|c| {
            c.command
                .iter()
                .flatten()
                .chain(c.args.iter().flatten())
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let flag = |name: &str| {
        args.iter().enumerate().find_map(|(i, a)| {
            a.strip_prefix(&format!("{name}="))
                .map(str::to_string)
                .or_else(|| (a == name).then(|| args.get(i + 1).cloned()).flatten())
        })
    };
    let label_version = d
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("app.kubernetes.io/version").cloned());
    OperatorDeployment {
        namespace: d.metadata.namespace.clone().unwrap_or_default(),
        name: d.metadata.name.clone().unwrap_or_default(),
        version: label_version.or_else(|| image.as_deref().and_then(image_tag)),
        image,
        leader_election: args.iter().any(|a| a == "--leader-election"),
        lease_name: flag("--lease-name"),
        replicas: spec.and_then(|s| s.replicas).unwrap_or(1),
        ready_replicas: d
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0),
    }
}

/// The tag of an image reference (`repo/name:1.2.3` → `1.2.3`; none for a digest only).
pub fn image_tag(image: &str) -> Option<String> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split_once(':').map(|(_, tag)| tag.to_string())
}

/// A k8s-openapi timestamp as chrono.
pub fn to_chrono(t: &k8s_openapi::jiff::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond().try_into().unwrap_or(0))
}

/// Runs `check` (again every second until it passes, with `--wait`); returns whether every
/// check passed.
pub async fn run(args: &CheckArgs, out: &mut dyn Write) -> Result<bool, CheckError> {
    let client = args.cluster.client().await?;
    let deadline = args.wait.map(|w| tokio::time::Instant::now() + w);
    loop {
        let checks = checks(&client, args, Utc::now()).await;
        let passed = !checks.iter().any(|c| c.result == Outcome::Fail);
        let waiting = deadline.is_some_and(|d| tokio::time::Instant::now() < d);
        if passed || !waiting {
            let text = render(&checks, passed, args.output)?;
            out.write_all(text.as_bytes())
                .map_err(|e| CheckError::Output(e.to_string()))?;
            return Ok(passed);
        }
        tracing::debug!(failed = ?checks.iter().filter(|c| c.result == Outcome::Fail).map(|c| &c.name).collect::<Vec<_>>(), "checks failed; trying again");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn render(checks: &[Check], passed: bool, format: CheckFormat) -> Result<String, CheckError> {
    match format {
        CheckFormat::Json => {
            serde_json::to_string_pretty(&serde_json::json!({"passed": passed, "checks": checks}))
                .map(|s| s + "\n")
                .map_err(|e| CheckError::Output(e.to_string()))
        }
        CheckFormat::Text => {
            let mut out = String::new();
            for c in checks {
                let mark = match c.result {
                    Outcome::Pass => "[ok]  ",
                    Outcome::Warn => "[warn]",
                    Outcome::Fail => "[FAIL]",
                };
                out.push_str(&format!("{mark} {}: {}\n", c.name, c.detail));
            }
            let failed = checks.iter().filter(|c| c.result == Outcome::Fail).count();
            if passed {
                out.push_str("\nAll checks passed.\n");
            } else {
                out.push_str(&format!("\n{failed} check(s) failed.\n"));
            }
            Ok(out)
        }
    }
}

/// Every check, in order: API server and versions, CRDs, policy, binding, Lease, leader.
pub async fn checks(client: &Client, args: &CheckArgs, now: DateTime<Utc>) -> Vec<Check> {
    let mut checks = Vec::new();
    match client.apiserver_version().await {
        Ok(v) => checks.push(Check::new(
            "API server",
            Outcome::Pass,
            format!("reachable, Kubernetes {}", v.git_version),
        )),
        Err(e) => {
            checks.push(Check::new(
                "API server",
                Outcome::Fail,
                format!("not reachable: {e}"),
            ));
            return checks;
        }
    }
    for name in [Tenant::crd_name(), Subscription::crd_name()] {
        checks.push(crd(client, name).await);
    }
    checks.extend(policy(client, args.policy_name.as_deref()).await);

    let operators = find_operators(client).await;
    let operator = match &operators {
        Ok(list) => list
            .iter()
            .find(|d| {
                args.lease_namespace
                    .as_deref()
                    .is_none_or(|ns| ns == d.namespace)
            })
            .cloned(),
        Err(_) => None,
    };
    checks.extend(leader(client, args, operator.as_ref(), now).await);

    let cli = env!("CARGO_PKG_VERSION");
    checks.push(match (&operators, &operator) {
        (_, Some(d)) => {
            let version = d.version.clone().unwrap_or_else(|| "unknown".into());
            let detail = format!(
                "CLI {cli}, operator {version} (Deployment {}/{}, image {}, {}/{} replicas ready)",
                d.namespace,
                d.name,
                d.image.as_deref().unwrap_or("?"),
                d.ready_replicas,
                d.replicas
            );
            if d.ready_replicas == 0 {
                Check::new(
                    "versions",
                    Outcome::Fail,
                    format!("{detail}: no replica is ready"),
                )
            } else if d.version.as_deref() != Some(cli) {
                Check::new(
                    "versions",
                    Outcome::Warn,
                    format!("{detail}: the CLI and the operator differ"),
                )
            } else {
                Check::new("versions", Outcome::Pass, detail)
            }
        }
        (Ok(_), None) => Check::new(
            "versions",
            Outcome::Warn,
            format!(
                "CLI {cli}, operator unknown: no Deployment labelled {NAME_LABEL} (an operator run another way does not show its version)"
            ),
        ),
        (Err(e), None) => Check::new(
            "versions",
            Outcome::Warn,
            format!("CLI {cli}, operator unknown: could not list Deployments: {e}"),
        ),
    });
    checks
}

async fn crd(client: &Client, name: &str) -> Check {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let label = format!("CRD {name}");
    let crd = match api.get_opt(name).await {
        Ok(Some(crd)) => crd,
        Ok(None) => {
            return Check::new(
                label,
                Outcome::Fail,
                "not installed: kubectl apply --server-side -f crds/ (or install the Helm chart)",
            );
        }
        Err(e) => return Check::new(label, Outcome::Fail, format!("could not read it: {e}")),
    };
    let condition = |type_: &str| {
        crd.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
            .map(|c| (c.status == "True", c.message.clone().unwrap_or_default()))
    };
    let served: Vec<&str> = crd
        .spec
        .versions
        .iter()
        .filter(|v| v.served)
        .map(|v| v.name.as_str())
        .collect();
    match condition("Established") {
        Some((true, _)) if served.contains(&"v1alpha1") => Check::new(
            label,
            Outcome::Pass,
            format!("Established, serves {}", served.join(", ")),
        ),
        Some((true, _)) => Check::new(
            label,
            Outcome::Fail,
            format!(
                "Established but does not serve v1alpha1 (serves: {})",
                served.join(", ")
            ),
        ),
        Some((_, message)) if !message.is_empty() => {
            Check::new(label, Outcome::Fail, format!("not Established: {message}"))
        }
        _ => Check::new(label, Outcome::Fail, "not Established yet"),
    }
}

async fn policy(client: &Client, wanted: Option<&str>) -> Vec<Check> {
    let label = "read-only policy";
    let api: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let found = match wanted {
        Some(name) => api.get_opt(name).await,
        None => match api.get_opt(POLICY_NAME).await {
            Ok(Some(p)) => Ok(Some(p)),
            Ok(None) => api
                .list(&ListParams::default().labels(NAME_LABEL))
                .await
                .map(|l| {
                    l.items.into_iter().find(|p| {
                        p.metadata
                            .name
                            .as_deref()
                            .is_some_and(|n| n.ends_with(POLICY_SUFFIX))
                    })
                }),
            Err(e) => Err(e),
        },
    };
    let policy = match found {
        Ok(Some(p)) => p,
        Ok(None) => {
            return vec![Check::new(
                label,
                Outcome::Fail,
                format!(
                    "no ValidatingAdmissionPolicy {}: read-only mode is not enforced at the API server (settings of read-only tenants can be changed); install deploy/read-only-policy.yaml or the Helm chart",
                    wanted
                        .unwrap_or("mailsec-read-only-settings (or <release>-read-only-settings)")
                ),
            )];
        }
        Err(e) => {
            return vec![Check::new(
                label,
                Outcome::Fail,
                format!("could not read ValidatingAdmissionPolicies: {e}"),
            )];
        }
    };
    let name = policy.metadata.name.clone().unwrap_or_default();
    let warnings: Vec<String> = policy
        .status
        .as_ref()
        .and_then(|s| s.type_checking.as_ref())
        .and_then(|t| t.expression_warnings.as_ref())
        .map(|ws| {
            ws.iter()
                .map(|w| format!("{}: {}", w.field_ref, w.warning))
                .collect()
        })
        .unwrap_or_default();
    let mut checks = vec![if warnings.is_empty() {
        Check::new(
            label,
            Outcome::Pass,
            format!("ValidatingAdmissionPolicy {name} installed"),
        )
    } else {
        Check::new(
            label,
            Outcome::Warn,
            format!(
                "ValidatingAdmissionPolicy {name} installed, with type-checking warnings: {}",
                warnings.join("; ")
            ),
        )
    }];
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    let label = "read-only policy binding";
    checks.push(match bindings.list(&ListParams::default()).await {
        Err(e) => Check::new(
            label,
            Outcome::Fail,
            format!("could not read ValidatingAdmissionPolicyBindings: {e}"),
        ),
        Ok(list) => {
            let mine: Vec<&ValidatingAdmissionPolicyBinding> = list
                .items
                .iter()
                .filter(|b| {
                    b.spec
                        .as_ref()
                        .and_then(|s| s.policy_name.as_deref())
                        == Some(name.as_str())
                })
                .collect();
            let denying = mine.iter().find(|b| {
                b.spec
                    .as_ref()
                    .and_then(|s| s.validation_actions.as_ref())
                    .is_some_and(|a| a.iter().any(|a| a == "Deny"))
            });
            match (denying, mine.first()) {
                (Some(b), _) => Check::new(
                    label,
                    Outcome::Pass,
                    format!(
                        "bound by {} (Deny)",
                        b.metadata.name.as_deref().unwrap_or("?")
                    ),
                ),
                (None, Some(b)) => Check::new(
                    label,
                    Outcome::Fail,
                    format!(
                        "binding {} does not Deny (validationActions: {:?}): changes are not refused",
                        b.metadata.name.as_deref().unwrap_or("?"),
                        b.spec
                            .as_ref()
                            .and_then(|s| s.validation_actions.clone())
                            .unwrap_or_default()
                    ),
                ),
                (None, None) => Check::new(
                    label,
                    Outcome::Fail,
                    format!(
                        "no ValidatingAdmissionPolicyBinding for {name}: the policy is installed but enforces nothing"
                    ),
                ),
            }
        }
    });
    checks
}

async fn leader(
    client: &Client,
    args: &CheckArgs,
    operator: Option<&OperatorDeployment>,
    now: DateTime<Utc>,
) -> Vec<Check> {
    if let Some(d) = operator.filter(|d| !d.leader_election)
        && args.lease_name.is_none()
    {
        return vec![Check::new(
            "leader",
            if d.ready_replicas > 0 {
                Outcome::Pass
            } else {
                Outcome::Fail
            },
            format!(
                "leader election is off (Deployment {}/{}): every replica reconciles; {}/{} ready",
                d.namespace, d.name, d.ready_replicas, d.replicas
            ),
        )];
    }
    let name = args
        .lease_name
        .clone()
        .or_else(|| operator.and_then(|d| d.lease_name.clone()))
        .or_else(|| operator.map(|d| d.name.clone()))
        .unwrap_or_else(|| DEFAULT_LEASE.to_string());
    let namespace = args
        .lease_namespace
        .clone()
        .or_else(|| operator.map(|d| d.namespace.clone()))
        .unwrap_or_else(|| "default".to_string());
    let label = "leader Lease";
    let api: Api<Lease> = Api::namespaced(client.clone(), &namespace);
    let lease = match api.get_opt(&name).await {
        Ok(Some(l)) => l,
        Ok(None) => {
            return vec![Check::new(
                label,
                Outcome::Fail,
                format!(
                    "Lease {namespace}/{name} not found: no operator with leader election has run there (is the operator installed? otherwise name it with --lease-name and --lease-namespace)"
                ),
            )];
        }
        Err(e) => {
            return vec![Check::new(
                label,
                Outcome::Fail,
                format!("could not read Lease {namespace}/{name}: {e}"),
            )];
        }
    };
    let spec = lease.spec.unwrap_or_default();
    let holder = spec.holder_identity.filter(|h| !h.is_empty());
    let renewed = spec.renew_time.as_ref().and_then(|t| to_chrono(&t.0));
    let duration = TimeDelta::seconds(spec.lease_duration_seconds.unwrap_or(0).into());
    let Some(holder) = holder else {
        return vec![Check::new(
            label,
            Outcome::Fail,
            format!(
                "Lease {namespace}/{name} is held by nobody: no operator is leading (a leader that shuts down releases it; is any replica running?)"
            ),
        )];
    };
    let Some(renewed) = renewed else {
        return vec![Check::new(
            label,
            Outcome::Fail,
            format!("Lease {namespace}/{name} names {holder} but was never renewed"),
        )];
    };
    let expires = renewed + duration;
    let mut checks = vec![if expires < now {
        Check::new(
            label,
            Outcome::Fail,
            format!(
                "Lease {namespace}/{name} held by {holder} expired {}: last renewed {}; the leader stopped renewing it (crashed, or cut off from the API server) and no standby took over",
                human::relative(now, expires),
                human::instant(renewed)
            ),
        )
    } else {
        Check::new(
            label,
            Outcome::Pass,
            format!(
                "Lease {namespace}/{name} held by {holder}, renewed {} (valid {} more)",
                human::relative(now, renewed),
                human::span(expires - now)
            ),
        )
    }];
    // The holder identity is `<pod name>-<random>`: the leader's pod, when it runs in one.
    let pod_name = holder
        .rsplit_once('-')
        .map(|(p, _)| p.to_string())
        .unwrap_or_else(|| holder.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let label = "leader ready";
    checks.push(match pods.get_opt(&pod_name).await {
        Ok(Some(pod)) => {
            let ready = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
                .map(|c| (c.status == "True", c.message.clone().unwrap_or_default()));
            match ready {
                Some((true, _)) => Check::new(
                    label,
                    Outcome::Pass,
                    format!("pod {namespace}/{pod_name} is Ready (its /readyz answers)"),
                ),
                Some((false, message)) => Check::new(
                    label,
                    Outcome::Fail,
                    format!("pod {namespace}/{pod_name} is not Ready: {message}"),
                ),
                None => Check::new(
                    label,
                    Outcome::Fail,
                    format!("pod {namespace}/{pod_name} reports no readiness yet"),
                ),
            }
        }
        Ok(None) => Check::new(
            label,
            Outcome::Warn,
            format!(
                "the holder {holder} is not a pod in {namespace} (an operator running outside the cluster?): only the Lease renewals above show it is alive"
            ),
        ),
        Err(e) => Check::new(
            label,
            Outcome::Warn,
            format!("could not read pod {namespace}/{pod_name}: {e}"),
        ),
    });
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_tags() {
        assert_eq!(
            image_tag("ghcr.io/x/mailsec-operator:0.1.0").as_deref(),
            Some("0.1.0")
        );
        assert_eq!(
            image_tag("localhost:5000/mailsec-operator:1.2").as_deref(),
            Some("1.2")
        );
        assert_eq!(image_tag("localhost:5000/mailsec-operator"), None);
        assert_eq!(image_tag("r/m:1.0@sha256:abc").as_deref(), Some("1.0"));
    }

    #[test]
    fn a_chart_deployment_names_its_lease_and_version() {
        let d: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "mailsec-operator", "namespace": "mailsec-system",
                "labels": {"app.kubernetes.io/version": "0.1.0"}},
            "spec": {"replicas": 2, "selector": {},
                "template": {"spec": {"containers": [{"name": "operator",
                    "image": "r/mailsec-operator:0.1.0",
                    "args": ["run", "--leader-election", "--lease-name=mailsec-operator-x"]}]}}},
            "status": {"readyReplicas": 1}
        }))
        .expect("deployment");
        let o = operator_deployment(&d);
        assert!(o.leader_election);
        assert_eq!(o.lease_name.as_deref(), Some("mailsec-operator-x"));
        assert_eq!(o.version.as_deref(), Some("0.1.0"));
        assert_eq!((o.replicas, o.ready_replicas), (2, 1));
    }
}
