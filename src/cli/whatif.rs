//! `what-if --at DATE`: the Tenants and Subscriptions of the cluster, as stored, evaluated by the
//! engine at another instant ("which tenants are suspended on 1 Feb?"). The same evaluation as
//! `evaluate` (manifests) and `report`; only the objects come from the cluster.

use std::io::Write;

use chrono::{DateTime, Utc};
use clap::Args;
use serde_json::{Value, json};

use super::cluster::{ClusterArgs, ClusterError};
use super::{PolicyArgs, ReportFormat, TableOutputArgs};
use crate::api::ConditionType;
use crate::api::date::format_instant;
use crate::engine::policy::format_period;
use crate::engine::{Policy, World, WorldEvaluation, evaluate_world};

#[derive(Args, Debug)]
pub struct WhatIfArgs {
    /// The instant to evaluate at: RFC 3339 time or YYYY-MM-DD (00:00 UTC).
    #[arg(long, value_parser = super::evaluate::parse_at)]
    pub at: DateTime<Utc>,
    /// Only the objects whose phase then differs from their phase now (as stored).
    #[arg(long)]
    pub changed: bool,
    #[command(flatten)]
    pub table: TableOutputArgs,
    /// The policy to evaluate with: give the operator's (`--warning-period`, `--grace-period`,
    /// `--config`, ...) when it does not run with the defaults.
    #[command(flatten)]
    pub policy: PolicyArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Why `what-if` failed.
#[derive(Debug, thiserror::Error)]
pub enum WhatIfError {
    #[error(transparent)]
    Settings(#[from] super::SettingsError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("could not read Tenants and Subscriptions from the cluster: {0}")]
    Kube(#[from] kube::Error),
    #[error("could not write the output: {0}")]
    Output(String),
}

impl WhatIfError {
    /// Exit code: 2 for bad settings, 1 for the cluster or the output.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Settings(_) => 2,
            _ => 1,
        }
    }
}

/// One object: its phase now (as stored) and at the instant.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WhatIfRow {
    pub kind: &'static str,
    pub name: String,
    /// `status.phase` as the operator last wrote it.
    pub phase_now: Option<String>,
    /// The phase the engine computes for the instant.
    pub phase_then: Option<String>,
    /// Why (the Warning reason of a tenant, the problem of a subscription).
    pub reason: Option<String>,
    /// The next change after the instant.
    pub next_change_at: Option<String>,
    pub details: String,
}

impl WhatIfRow {
    pub fn changed(&self) -> bool {
        self.phase_now != self.phase_then
    }
}

/// Runs `what-if`, writing to `out`.
pub async fn run(args: &WhatIfArgs, out: &mut dyn Write) -> Result<(), WhatIfError> {
    let policy = args.policy.policy()?;
    let client = args.cluster.client().await?;
    let world = super::report::world(&client).await?;
    let text = render(&world, &policy, args)?;
    out.write_all(text.as_bytes())
        .map_err(|e| WhatIfError::Output(e.to_string()))
}

/// The rows of every object, tenants first, each kind sorted by name.
pub fn rows(world: &World, eval: &WorldEvaluation) -> Vec<WhatIfRow> {
    let phase = |p: Option<String>| p.filter(|p| !p.is_empty());
    let mut tenants: Vec<WhatIfRow> = world
        .tenants
        .iter()
        .zip(&eval.tenants)
        .map(|(t, e)| {
            let warning = crate::api::condition::find(&e.status.conditions, ConditionType::Warning);
            WhatIfRow {
                kind: "Tenant",
                name: t.metadata.name.clone().unwrap_or_default(),
                phase_now: phase(
                    t.status
                        .as_ref()
                        .and_then(|s| s.phase)
                        .map(|p| format!("{p:?}")),
                ),
                phase_then: e.status.phase.map(|p| format!("{p:?}")),
                reason: warning
                    .filter(|c| c.is_true())
                    .map(|c| c.reason.to_string()),
                next_change_at: e.next_transition.map(format_instant),
                details: e
                    .status
                    .services
                    .iter()
                    .map(|s| format!("{}={:?}", s.product, s.phase))
                    .collect::<Vec<_>>()
                    .join(" "),
            }
        })
        .collect();
    let mut subscriptions: Vec<WhatIfRow> = world
        .subscriptions
        .iter()
        .zip(&eval.subscriptions)
        .map(|(s, e)| {
            let problem = e.status.conditions.iter().find(|c| {
                (c.is(ConditionType::Ready) && !c.is_true())
                    || (c.is(ConditionType::SeatLimitExceeded) && c.is_true())
            });
            WhatIfRow {
                kind: "Subscription",
                name: s.metadata.name.clone().unwrap_or_default(),
                phase_now: s
                    .status
                    .as_ref()
                    .and_then(|st| st.phase)
                    .map(|p| format!("{p:?}")),
                phase_then: e.status.phase.map(|p| format!("{p:?}")),
                reason: problem.map(|c| c.reason.to_string()),
                next_change_at: e.next_transition.map(format_instant),
                details: format!(
                    "tenant={} product={} plan={:?} ends={}",
                    s.spec.tenant_ref,
                    s.spec.product,
                    s.spec.plan,
                    e.status
                        .effective_end_at
                        .map(format_instant)
                        .unwrap_or_else(|| "-".into()),
                ),
            }
        })
        .collect();
    tenants.sort_by(|a, b| a.name.cmp(&b.name));
    subscriptions.sort_by(|a, b| a.name.cmp(&b.name));
    tenants.extend(subscriptions);
    tenants
}

/// Evaluates the world at `args.at` and renders it as `args.table.output` asks.
pub fn render(world: &World, policy: &Policy, args: &WhatIfArgs) -> Result<String, WhatIfError> {
    let output = |e: &dyn std::fmt::Display| WhatIfError::Output(e.to_string());
    let at = args.at;
    let eval = evaluate_world(world, policy, at);
    let rows: Vec<WhatIfRow> = rows(world, &eval)
        .into_iter()
        .filter(|r| !args.changed || r.changed())
        .collect();
    let headers = !args.table.no_headers;
    let dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    match args.table.output {
        ReportFormat::Json | ReportFormat::Yaml => {
            let items = objects(world, &eval, &rows)?;
            let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
            if args.table.output == ReportFormat::Json {
                serde_json::to_string_pretty(&list)
                    .map(|s| s + "\n")
                    .map_err(|e| output(&e))
            } else {
                serde_yaml::to_string(&list).map_err(|e| output(&e))
            }
        }
        ReportFormat::Name => Ok(rows
            .iter()
            .map(|r| {
                format!(
                    "{}.{}/{}\n",
                    r.kind.to_lowercase(),
                    crate::api::GROUP,
                    r.name
                )
            })
            .collect()),
        ReportFormat::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            if headers {
                w.write_record([
                    "kind",
                    "name",
                    "phase_now",
                    "phase_then",
                    "reason",
                    "next_change_at",
                    "details",
                ])
                .map_err(|e| output(&e))?;
            }
            for r in &rows {
                w.write_record([
                    r.kind,
                    &r.name,
                    r.phase_now.as_deref().unwrap_or_default(),
                    r.phase_then.as_deref().unwrap_or_default(),
                    r.reason.as_deref().unwrap_or_default(),
                    r.next_change_at.as_deref().unwrap_or_default(),
                    &r.details,
                ])
                .map_err(|e| output(&e))?;
            }
            let bytes = w.into_inner().map_err(|e| output(&e))?;
            String::from_utf8(bytes).map_err(|e| output(&e))
        }
        ReportFormat::Table | ReportFormat::Wide => {
            let wide = args.table.output == ReportFormat::Wide;
            let mut table: Vec<Vec<String>> = Vec::new();
            if headers {
                let mut h = vec!["KIND", "NAME", "NOW", "THEN", "REASON", "NEXT CHANGE"];
                if wide {
                    h.push("DETAILS");
                }
                table.push(h.into_iter().map(String::from).collect());
            }
            for r in &rows {
                let mut line = vec![
                    r.kind.to_string(),
                    r.name.clone(),
                    dash(&r.phase_now),
                    dash(&r.phase_then),
                    dash(&r.reason),
                    dash(&r.next_change_at),
                ];
                if wide {
                    line.push(r.details.clone());
                }
                table.push(line);
            }
            Ok(if headers {
                super::human::render_columns(
                    &format!(
                        "what-if at {} (now: as stored; then: evaluated with warning period {}, grace period {})",
                        format_instant(at),
                        format_period(policy.warning_period),
                        format_period(policy.grace_period)
                    ),
                    &table,
                )
            } else {
                super::human::columns(&table)
            })
        }
    }
}

/// The objects of `rows` as stored (without managed fields), with `.status` replaced by the
/// status at the instant, as `evaluate -o json` writes them.
fn objects(
    world: &World,
    eval: &WorldEvaluation,
    rows: &[WhatIfRow],
) -> Result<Vec<Value>, WhatIfError> {
    let output = |e: &dyn std::fmt::Display| WhatIfError::Output(e.to_string());
    let document = |mut v: Value| {
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
        }
        v
    };
    let mut manifests = crate::manifests::Manifests::default();
    manifests.world = world.clone();
    for t in &world.tenants {
        manifests
            .tenant_documents
            .push(document(serde_json::to_value(t).map_err(|e| output(&e))?));
    }
    for s in &world.subscriptions {
        manifests
            .subscription_documents
            .push(document(serde_json::to_value(s).map_err(|e| output(&e))?));
    }
    let items = super::evaluate::with_status(&manifests, eval).map_err(|e| output(&e))?;
    let wanted = |item: &Value| {
        rows.iter().any(|r| {
            item["kind"] == r.kind && item["metadata"]["name"].as_str() == Some(r.name.as_str())
        })
    };
    let mut items: Vec<Value> = items.into_iter().filter(wanted).collect();
    items.sort_by(|a, b| {
        let key = |v: &Value| {
            (
                v["kind"] != "Tenant",
                v["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        };
        key(a).cmp(&key(b))
    });
    Ok(items)
}
