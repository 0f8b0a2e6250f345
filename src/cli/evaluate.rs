//! `mailsec-operator evaluate`: the status the operator would set, from manifests, offline.

use std::io::Write;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Value, json};

use super::{EvaluateArgs, OutputFormat};
use crate::api::date::format_instant;
use crate::api::{ConditionType, Subscription, Tenant};
use crate::engine::{
    Policy, SubscriptionEvaluation, TenantEvaluation, WorldEvaluation, evaluate_world,
    evaluate_world_map,
};
use crate::manifests::{ManifestError, Manifests, read_paths_with};

/// Why `evaluate` failed; every variant exits with code 2 (bad input).
#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Settings(#[from] super::SettingsError),
    #[error("could not write the output: {0}")]
    Output(String),
}

/// Parses `--at`: an RFC 3339 time, or a date meaning 00:00:00 UTC of that day.
pub fn parse_at(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("{text:?} is neither a date (YYYY-MM-DD) nor an RFC 3339 time"))
}

/// Runs `evaluate`, writing to `out`. `now` is used when `--at` is absent.
pub fn run(
    args: &EvaluateArgs,
    now: DateTime<Utc>,
    out: &mut dyn Write,
) -> Result<(), EvaluateError> {
    // The table shows no documents: not keeping them halves the memory a fleet takes.
    let documents = args.output != OutputFormat::Table;
    let manifests = read_paths_with(&args.files, documents)?;
    let at = args.at.unwrap_or(now);
    let policy = args.policy.policy()?;
    let text = render(&manifests, &policy, at, args.output)?;
    out.write_all(text.as_bytes())
        .map_err(|e| EvaluateError::Output(e.to_string()))
}

/// Evaluates the manifests at `at` and renders them in `format`.
pub fn render(
    manifests: &Manifests,
    policy: &Policy,
    at: DateTime<Utc>,
    format: OutputFormat,
) -> Result<String, EvaluateError> {
    if format == OutputFormat::Table {
        return Ok(table(manifests, policy, at));
    }
    let eval = evaluate_world(&manifests.world, policy, at);
    let items = with_status(manifests, &eval)?;
    match format {
        OutputFormat::Json => {
            let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
            serde_json::to_string_pretty(&list)
                .map(|s| s + "\n")
                .map_err(|e| EvaluateError::Output(e.to_string()))
        }
        OutputFormat::Yaml => {
            let mut s = String::new();
            for item in &items {
                s.push_str("---\n");
                s.push_str(
                    &serde_yaml::to_string(item)
                        .map_err(|e| EvaluateError::Output(e.to_string()))?,
                );
            }
            Ok(s)
        }
        OutputFormat::Table => Ok(table(manifests, policy, at)),
    }
}

/// The original documents with `.status` replaced by the computed one: tenants, then subscriptions.
pub(crate) fn with_status(
    manifests: &Manifests,
    eval: &WorldEvaluation,
) -> Result<Vec<Value>, EvaluateError> {
    let mut items = Vec::new();
    for (doc, t) in manifests.tenant_documents.iter().zip(&eval.tenants) {
        let mut doc = doc.clone();
        doc["status"] = to_value(&t.status)?;
        items.push(doc);
    }
    for (doc, s) in manifests
        .subscription_documents
        .iter()
        .zip(&eval.subscriptions)
    {
        let mut doc = doc.clone();
        doc["status"] = to_value(&s.status)?;
        items.push(doc);
    }
    Ok(items)
}

fn to_value<T: serde::Serialize>(v: &T) -> Result<Value, EvaluateError> {
    serde_json::to_value(v).map_err(|e| EvaluateError::Output(e.to_string()))
}

/// The table's rows are made as the objects are evaluated, so a fleet's evaluations are never
/// held at once.
fn table(manifests: &Manifests, policy: &Policy, at: DateTime<Utc>) -> String {
    let (tenants, subscriptions) =
        evaluate_world_map(&manifests.world, policy, at, tenant_row, subscription_row);
    let header = ["KIND", "NAME", "PHASE", "REASON", "NEXT CHANGE", "DETAILS"].map(String::from);
    let rows: Vec<[String; 6]> = std::iter::once(header)
        .chain(tenants)
        .chain(subscriptions)
        .collect();
    super::human::render_columns(&format!("evaluated at {}", format_instant(at)), &rows)
}

fn dash() -> String {
    "-".to_string()
}

fn instant_or_dash(t: Option<DateTime<Utc>>) -> String {
    t.map(format_instant).unwrap_or_else(dash)
}

/// A phase (or any value) as its name, or `-`.
fn debug_or_dash(v: Option<impl std::fmt::Debug>) -> String {
    v.map(|v| format!("{v:?}")).unwrap_or_else(dash)
}

fn tenant_row(t: &Tenant, e: TenantEvaluation) -> [String; 6] {
    let warning = crate::api::condition::find(&e.status.conditions, ConditionType::Warning);
    let mut services: Vec<String> = e
        .status
        .services
        .iter()
        .map(|s| format!("{}={:?}", s.product, s.phase))
        .collect();
    let duplicates: Vec<&str> = e
        .status
        .possible_duplicates
        .iter()
        .map(|d| d.tenant.as_str())
        .collect();
    if !duplicates.is_empty() {
        services.push(format!("possible-duplicate-of={}", duplicates.join(",")));
    }
    [
        "Tenant".into(),
        t.metadata.name.clone().unwrap_or_default(),
        debug_or_dash(e.status.phase),
        warning
            .filter(|c| c.is_true())
            .map(|c| c.reason.to_string())
            .unwrap_or_else(dash),
        instant_or_dash(e.next_transition),
        services.join(" "),
    ]
}

fn subscription_row(s: &Subscription, e: SubscriptionEvaluation) -> [String; 6] {
    let problem = e.status.conditions.iter().find(|c| {
        (c.is(ConditionType::Ready) && !c.is_true())
            || (c.is(ConditionType::SeatLimitExceeded) && c.is_true())
    });
    [
        "Subscription".into(),
        s.metadata.name.clone().unwrap_or_default(),
        debug_or_dash(e.status.phase),
        problem.map(|c| c.reason.to_string()).unwrap_or_else(dash),
        instant_or_dash(e.next_transition),
        format!(
            "tenant={} product={} plan={:?} seats={}/{}{}",
            s.spec.tenant_ref,
            s.spec.product,
            s.spec.plan,
            e.seats_used,
            s.spec.seats,
            e.status
                .effective_end_at
                .map(|t| format!(" in force until {}", crate::engine::human(t)))
                .unwrap_or_default()
        ),
    ]
}
