//! `mailsec-operator evaluate`: the status the operator would set, from manifests, offline.

use std::io::Write;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

use super::{EvaluateArgs, OutputFormat};
use crate::api::date::format_instant;
use crate::api::{ConditionType, Subscription, Tenant};
use crate::engine::{
    Policy, SubscriptionEvaluation, TenantEvaluation, WorldEvaluation, evaluate_world_indexed,
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
    write(&manifests, &policy, at, args.output, out)
}

/// Evaluates the manifests at `at` and renders them in `format`.
pub fn render(
    manifests: &Manifests,
    policy: &Policy,
    at: DateTime<Utc>,
    format: OutputFormat,
) -> Result<String, EvaluateError> {
    let mut text = Vec::new();
    write(manifests, policy, at, format, &mut text)?;
    String::from_utf8(text).map_err(|e| EvaluateError::Output(e.to_string()))
}

/// [`render`] into `out`. Documents (`-o json|yaml`) are rendered each as its object is
/// evaluated, on every core, and written in order: a fleet's output is never held as values
/// beside its text (at 100,000 tenants that took 8 GiB and 30 s for JSON).
fn write(
    manifests: &Manifests,
    policy: &Policy,
    at: DateTime<Utc>,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), EvaluateError> {
    let output = |e: std::io::Error| EvaluateError::Output(e.to_string());
    if format == OutputFormat::Table {
        return out
            .write_all(table(manifests, policy, at).as_bytes())
            .map_err(output);
    }
    let document = |doc: Option<&Value>, status: Result<Value, EvaluateError>| {
        let mut doc = doc.cloned().unwrap_or(Value::Null);
        doc["status"] = status?;
        render_document(&doc, format)
    };
    let (tenants, subscriptions) = evaluate_world_indexed(
        &manifests.world,
        policy,
        at,
        |i, _, e| document(manifests.tenant_documents.get(i), to_value(&e.status)),
        |i, _, e| document(manifests.subscription_documents.get(i), to_value(&e.status)),
    );
    let items = tenants.into_iter().chain(subscriptions);
    if format == OutputFormat::Json {
        // `{"apiVersion": "v1", "kind": "List", "items": [...]}` as serde_json writes it pretty:
        // keys in order, the items two levels in, an empty list as `[]`.
        out.write_all(b"{\n  \"apiVersion\": \"v1\",\n  \"items\": [")
            .map_err(output)?;
        let mut separator: &[u8] = b"\n";
        let mut empty = true;
        for item in items {
            out.write_all(separator).map_err(output)?;
            out.write_all(item?.as_bytes()).map_err(output)?;
            (separator, empty) = (b",\n", false);
        }
        let end: &[u8] = if empty { b"]" } else { b"\n  ]" };
        out.write_all(end).map_err(output)?;
        return out
            .write_all(b",\n  \"kind\": \"List\"\n}\n")
            .map_err(output);
    }
    for item in items {
        out.write_all(item?.as_bytes()).map_err(output)?;
    }
    Ok(())
}

/// One output document: pretty JSON indented as an item of the output's `List` (JSON strings
/// hold no line breaks, so indenting line by line is exact), or a YAML document.
fn render_document(doc: &Value, format: OutputFormat) -> Result<String, EvaluateError> {
    let error = |e: &dyn std::fmt::Display| EvaluateError::Output(e.to_string());
    if format == OutputFormat::Json {
        let pretty = serde_json::to_string_pretty(doc).map_err(|e| error(&e))?;
        let mut text = String::with_capacity(pretty.len() + pretty.len() / 8);
        for (i, line) in pretty.lines().enumerate() {
            if i > 0 {
                text.push('\n');
            }
            text.push_str("    ");
            text.push_str(line);
        }
        Ok(text)
    } else {
        let yaml = serde_yaml::to_string(doc).map_err(|e| error(&e))?;
        Ok(format!("---\n{yaml}"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::evaluate_world;
    use crate::manifests::read_paths;

    /// The documents rendered one by one, as the whole `List` value would be written at once.
    #[test]
    fn documents_rendered_one_by_one_read_as_the_whole_list_would() {
        let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let at = parse_at("2026-12-15").expect("date");
        let policy = Policy::default();
        for manifests in [
            read_paths(&[examples]).expect("the examples"),
            Manifests::default(),
        ] {
            let eval = evaluate_world(&manifests.world, &policy, at);
            let items = with_status(&manifests, &eval).expect("documents");
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
            let json = serde_json::to_string_pretty(&list).expect("json") + "\n";
            let yaml: String = items
                .iter()
                .map(|item| format!("---\n{}", serde_yaml::to_string(item).expect("yaml")))
                .collect();
            let render = |format| render(&manifests, &policy, at, format).expect("rendered");
            assert_eq!(render(OutputFormat::Json), json);
            assert_eq!(render(OutputFormat::Yaml), yaml);
        }
    }
}
