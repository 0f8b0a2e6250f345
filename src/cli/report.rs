//! `mailsec-operator report`: the "service subscriptions" report — every subscription with its
//! tenant, product, plan, start and end dates, effective end (extensions included), status, days
//! left, seats and sharing, at an instant (now, or a future date with `--at`). From manifests
//! (`-f`, like `evaluate`) or from the cluster of the current kubeconfig.

use std::io::Write;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{ReportArgs, ReportFormat};
use crate::api::ConditionType;
use crate::api::Subscription;
use crate::api::date::format_instant;
use crate::engine::{Policy, SubscriptionEvaluation, World, evaluate_world_map};
use crate::manifests::{ManifestError, read_paths_with};

/// Why `report` failed.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Settings(#[from] super::SettingsError),
    #[error(transparent)]
    Cluster(#[from] super::cluster::ClusterError),
    #[error("could not read Tenants and Subscriptions from the cluster: {0}")]
    Kube(#[from] kube::Error),
    #[error("could not write the report: {0}")]
    Output(String),
}

impl ReportError {
    /// Exit code: 2 for bad input (manifests, settings), 1 for the cluster or the output.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Manifest(_) | Self::Settings(_) => 2,
            _ => 1,
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportRow {
    pub subscription: String,
    /// The owner (`spec.tenantRef`).
    pub tenant: String,
    pub product: String,
    pub plan: String,
    /// `spec.startDate` as written.
    pub start_date: String,
    /// `spec.endDate` as written.
    pub end_date: String,
    /// The later of `endDate` and `extension.until`, as written.
    pub effective_end: String,
    /// The instant service ends (a bare date ends at the end of that day, UTC).
    pub effective_end_at: Option<String>,
    /// The instant the grace period ends (suspension).
    pub grace_ends_at: Option<String>,
    /// The subscription's phase at the report instant.
    pub status: String,
    /// Whole days from the report instant to the effective end; negative once it has passed.
    pub days_left: Option<i64>,
    pub seats_used: i64,
    pub seats_licensed: i64,
    pub shared_with: Vec<String>,
    /// Problems: conditions the operator would report (tenant not found, seats exceeded, ...).
    pub notes: Vec<String>,
}

/// Runs `report`, writing to `out`; `now` is used when `--at` is absent.
pub async fn run(
    args: &ReportArgs,
    now: DateTime<Utc>,
    out: &mut dyn Write,
) -> Result<(), ReportError> {
    let policy = args.policy.policy()?;
    let world = if args.files.is_empty() {
        from_cluster(&args.cluster).await?
    } else {
        read_paths_with(&args.files, false)?.world
    };
    let at = args.at.unwrap_or(now);
    let text = render_with(
        &rows(&world, &policy, at),
        at,
        args.table.output,
        !args.table.no_headers,
    )?;
    out.write_all(text.as_bytes())
        .map_err(|e| ReportError::Output(e.to_string()))
}

/// Every Tenant and Subscription of the cluster the kubeconfig flags name.
pub async fn from_cluster(cluster: &super::cluster::ClusterArgs) -> Result<World, ReportError> {
    let client = cluster.client().await?;
    Ok(world(&client).await?)
}

/// Every Tenant and Subscription of the cluster, as stored (those that can not be read are left
/// out and named on standard error).
pub async fn world(client: &kube::Client) -> Result<World, kube::Error> {
    let tenants = super::cluster::list_readable(client).await?;
    let subscriptions = super::cluster::list_readable(client).await?;
    Ok(World {
        tenants,
        subscriptions,
    })
}

/// The report's rows at `at`, sorted by tenant, product, start and name.
pub fn rows(world: &World, policy: &Policy, at: DateTime<Utc>) -> Vec<ReportRow> {
    // Each evaluation becomes what the report shows of it as soon as it is made, so a fleet's
    // evaluations are never held at once.
    let (possible_duplicates, rows) = evaluate_world_map(
        world,
        policy,
        at,
        |_, e| -> Vec<String> {
            let others = e.status.possible_duplicates.into_iter();
            others.map(|d| d.tenant).collect()
        },
        |s, e| row(s, &e, at),
    );
    // Tenant → the tenants it is possibly a duplicate of, for the notes of its subscriptions.
    let duplicates: std::collections::BTreeMap<&str, Vec<String>> = world
        .tenants
        .iter()
        .zip(possible_duplicates)
        .filter_map(|(t, others)| {
            Some((t.metadata.name.as_deref()?, others)).filter(|(_, o)| !o.is_empty())
        })
        .collect();
    let mut rows: Vec<ReportRow> =
        world
            .subscriptions
            .iter()
            .zip(rows)
            .map(|(s, mut r)| {
                if let Some(others) = duplicates.get(s.spec.tenant_ref.as_str()) {
                    r.notes.extend(others.iter().map(|o| {
                        format!("tenant {}: possible duplicate of {o}", s.spec.tenant_ref)
                    }));
                }
                r
            })
            .collect();
    rows.sort_by(|a, b| {
        (&a.tenant, &a.product, &a.effective_end_at, &a.subscription).cmp(&(
            &b.tenant,
            &b.product,
            &b.effective_end_at,
            &b.subscription,
        ))
    });
    rows
}

fn row(s: &Subscription, e: &SubscriptionEvaluation, at: DateTime<Utc>) -> ReportRow {
    let spec = &s.spec;
    let timeline = e.timeline.as_ref();
    let effective_end = match (&spec.extension, timeline) {
        (Some(ext), Some(t)) if ext.until.end_instant().ok() == Some(t.effective_end_at) => {
            ext.until.as_str().to_string()
        }
        _ => spec.end_date.as_str().to_string(),
    };
    let days_left = timeline.map(|t| (t.effective_end_at - at).num_seconds().div_euclid(86_400));
    let notes = e
        .status
        .conditions
        .iter()
        .filter(|c| {
            (c.is(ConditionType::Ready) && !c.is_true())
                || (c.is(ConditionType::SeatLimitExceeded) && c.is_true())
        })
        .map(|c| c.reason.to_string())
        .collect();
    ReportRow {
        subscription: s.metadata.name.clone().unwrap_or_default(),
        tenant: spec.tenant_ref.clone(),
        product: spec.product.to_string(),
        plan: format!("{:?}", spec.plan),
        start_date: spec.start_date.as_str().to_string(),
        end_date: spec.end_date.as_str().to_string(),
        effective_end,
        effective_end_at: timeline.map(|t| format_instant(t.effective_end_at)),
        grace_ends_at: timeline.map(|t| format_instant(t.grace_ends_at)),
        status: e
            .status
            .phase
            .map(|p| format!("{p:?}"))
            .unwrap_or_else(|| "Unknown".into()),
        days_left,
        seats_used: e.seats_used,
        seats_licensed: spec.seats,
        shared_with: spec.shared_with.iter().map(|t| t.0.clone()).collect(),
        notes,
    }
}

/// The CSV columns, in order.
pub const CSV_HEADER: [&str; 13] = [
    "subscription",
    "tenant",
    "product",
    "plan",
    "start_date",
    "end_date",
    "effective_end",
    "status",
    "days_left",
    "seats_used",
    "seats_licensed",
    "shared_with",
    "notes",
];

/// Renders the rows in `format`, with the title and header lines.
pub fn render(
    rows: &[ReportRow],
    at: DateTime<Utc>,
    format: ReportFormat,
) -> Result<String, ReportError> {
    render_with(rows, at, format, true)
}

/// Renders the rows in `format`; `headers: false` leaves out the title and header lines.
pub fn render_with(
    rows: &[ReportRow],
    at: DateTime<Utc>,
    format: ReportFormat,
    headers: bool,
) -> Result<String, ReportError> {
    let output = |e: &dyn std::fmt::Display| ReportError::Output(e.to_string());
    let doc = || serde_json::json!({ "at": format_instant(at), "subscriptions": rows });
    match format {
        ReportFormat::Json => serde_json::to_string_pretty(&doc())
            .map(|s| s + "\n")
            .map_err(|e| output(&e)),
        ReportFormat::Yaml => serde_yaml::to_string(&doc()).map_err(|e| output(&e)),
        ReportFormat::Name => Ok(rows
            .iter()
            .map(|r| format!("subscription.mailsec.io/{}\n", r.subscription))
            .collect()),
        ReportFormat::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            if headers {
                w.write_record(CSV_HEADER).map_err(|e| output(&e))?;
            }
            for r in rows {
                w.write_record(cells(r, ", ")).map_err(|e| output(&e))?;
            }
            let bytes = w.into_inner().map_err(|e| output(&e))?;
            String::from_utf8(bytes).map_err(|e| output(&e))
        }
        ReportFormat::Table | ReportFormat::Wide => {
            let wide = format == ReportFormat::Wide;
            let mut header = vec![
                "SUBSCRIPTION",
                "TENANT",
                "PRODUCT",
                "PLAN",
                "START",
                "END",
                "EFFECTIVE END",
                "STATUS",
                "DAYS LEFT",
                "SEATS",
                "SHARED WITH",
                "NOTES",
            ];
            if wide {
                header.extend(["EFFECTIVE END AT", "GRACE ENDS AT"]);
            }
            let mut table: Vec<Vec<String>> = Vec::new();
            if headers {
                table.push(header.into_iter().map(String::from).collect());
            }
            for r in rows {
                let [
                    name,
                    tenant,
                    product,
                    plan,
                    start,
                    end,
                    effective_end,
                    status,
                    days_left,
                    seats_used,
                    seats_licensed,
                    shared_with,
                    notes,
                ] = cells(r, ",");
                let dash = |s: String| if s.is_empty() { "-".into() } else { s };
                let mut line = vec![
                    name,
                    tenant,
                    product,
                    plan,
                    start,
                    end,
                    effective_end,
                    status,
                    dash(days_left),
                    format!("{seats_used}/{seats_licensed}"),
                    dash(shared_with),
                    dash(notes),
                ];
                if wide {
                    line.push(dash(r.effective_end_at.clone().unwrap_or_default()));
                    line.push(dash(r.grace_ends_at.clone().unwrap_or_default()));
                }
                table.push(line);
            }
            Ok(if headers {
                super::human::render_columns(
                    &format!("service subscriptions at {}", format_instant(at)),
                    &table,
                )
            } else {
                super::human::columns(&table)
            })
        }
    }
}

/// A row's cells in [`CSV_HEADER`] order; lists joined with `sep`.
fn cells(r: &ReportRow, sep: &str) -> [String; 13] {
    [
        r.subscription.clone(),
        r.tenant.clone(),
        r.product.clone(),
        r.plan.clone(),
        r.start_date.clone(),
        r.end_date.clone(),
        r.effective_end.clone(),
        r.status.clone(),
        r.days_left.map(|d| d.to_string()).unwrap_or_default(),
        r.seats_used.to_string(),
        r.seats_licensed.to_string(),
        r.shared_with.join(sep),
        r.notes.join(sep),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn extension_and_days_left() {
        let mut sub = fixtures::subscription(
            "s",
            "acme",
            "email-safeguard",
            "2026-01-01",
            "2026-12-10",
            10,
        );
        sub.spec.extension = Some(crate::api::Extension {
            until: crate::api::LicenseDate::new("2027-01-31"),
            reason: Some("PO, pending".into()),
        });
        sub.spec.shared_with = vec![
            crate::api::TenantName("b".into()),
            crate::api::TenantName("c".into()),
        ];
        let world = World {
            tenants: vec![fixtures::tenant("acme", &["email-safeguard"], 7)],
            subscriptions: vec![sub],
        };
        let at = crate::cli::evaluate::parse_at("2026-12-15").expect("date");
        let rows = rows(&world, &Policy::default(), at);
        let r = &rows[0];
        assert_eq!(r.effective_end, "2027-01-31");
        // 2027-01-31 ends at 2027-02-01T00:00Z: 48 days after 2026-12-15T00:00Z.
        assert_eq!(r.days_left, Some(48));
        assert_eq!(r.status, "Active");
        assert_eq!(r.notes, ["SharedTenantNotFound"]);
        let csv = render(&rows, at, ReportFormat::Csv).expect("csv");
        assert!(
            csv.ends_with(
                "s,acme,email-safeguard,Paid,2026-01-01,2026-12-10,2027-01-31,Active,48,7,10,\"b, c\",SharedTenantNotFound\n"
            ),
            "{csv}"
        );
        let past = crate::cli::evaluate::parse_at("2027-02-01T12:00:00Z").expect("date");
        assert_eq!(
            super::rows(&world, &Policy::default(), past)[0].days_left,
            Some(-1)
        );
    }
}
