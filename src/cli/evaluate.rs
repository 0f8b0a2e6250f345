//! `mailsec-operator evaluate`: the status the operator would set, from manifests, offline.

use std::io::Write;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Value, json};

use super::{EvaluateArgs, OutputFormat};
use crate::api::ConditionType;
use crate::api::date::format_instant;
use crate::engine::{Policy, WorldEvaluation, evaluate_world};
use crate::manifests::{ManifestError, Manifests, read_paths};

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
    let manifests = read_paths(&args.files)?;
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
        OutputFormat::Table => Ok(table(manifests, &eval, at)),
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

fn table(manifests: &Manifests, eval: &WorldEvaluation, at: DateTime<Utc>) -> String {
    let dash = || "-".to_string();
    let opt = |t: Option<DateTime<Utc>>| t.map(format_instant).unwrap_or_else(dash);
    let mut rows: Vec<[String; 6]> =
        vec![["KIND", "NAME", "PHASE", "REASON", "NEXT CHANGE", "DETAILS"].map(String::from)];
    for (t, e) in manifests.world.tenants.iter().zip(&eval.tenants) {
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
        rows.push([
            "Tenant".into(),
            t.metadata.name.clone().unwrap_or_default(),
            e.status
                .phase
                .map(|p| format!("{p:?}"))
                .unwrap_or_else(dash),
            warning
                .filter(|c| c.is_true())
                .map(|c| c.reason.clone())
                .unwrap_or_else(dash),
            opt(e.next_transition),
            services.join(" "),
        ]);
    }
    for (s, e) in manifests
        .world
        .subscriptions
        .iter()
        .zip(&eval.subscriptions)
    {
        let problem = e.status.conditions.iter().find(|c| {
            (c.is(ConditionType::Ready) && !c.is_true())
                || (c.is(ConditionType::SeatLimitExceeded) && c.is_true())
        });
        rows.push([
            "Subscription".into(),
            s.metadata.name.clone().unwrap_or_default(),
            e.status
                .phase
                .map(|p| format!("{p:?}"))
                .unwrap_or_else(dash),
            problem.map(|c| c.reason.clone()).unwrap_or_else(dash),
            opt(e.next_transition),
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
        ]);
    }
    super::human::render_columns(&format!("evaluated at {}", format_instant(at)), &rows)
}
