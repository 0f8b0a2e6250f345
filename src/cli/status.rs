//! `status tenant NAME` / `status subscription NAME`: everything a person needs about one object,
//! read from the cluster: its phase and conditions, each service with the subscription covering
//! it, days left, the next change and what it does, what to do about it, the notifications not
//! delivered yet and the recent Events about it. The exit code tells scripts the phase.
//!
//! It shows the status the operator wrote (computed with the operator's own policy), not a new
//! evaluation; when that status looks out of date (a newer generation, or a change that was due
//! and did not happen) it says so.
//!
//! Gathering (I/O) is in [`run`]; everything else is pure and rendered from what was gathered.

use std::io::Write;

use chrono::{DateTime, TimeDelta, Utc};
use clap::{Args, Subcommand};
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};

use super::cluster::{ClusterArgs, ClusterError, list_readable};
use super::human::{self, dash, indent};
use crate::api::ConditionType;
use crate::api::condition::Condition;
use crate::api::{
    NotificationState, ServicePhase, ServiceStatus, Subscription, SubscriptionPhase, Tenant,
    TenantPhase,
};
use crate::controller::lenient::Lenient;

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(subcommand)]
    pub target: StatusTarget,
    /// How many of the most recent Events to show.
    #[arg(long, global = true, default_value_t = 10)]
    pub events: usize,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Subcommand, Debug)]
pub enum StatusTarget {
    /// A Tenant: its phase, services, what to do, notifications and Events.
    #[command(visible_alias = "tenants", visible_alias = "mten")]
    Tenant {
        /// The Tenant's name.
        name: String,
    },
    /// A Subscription: its phase, licence period, the tenants it covers, what to do and Events.
    #[command(visible_alias = "subscriptions", visible_alias = "msub")]
    Subscription {
        /// The Subscription's name.
        name: String,
    },
}

/// What the object's state means, as an exit code for scripts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Tenant `Active`; Subscription `Pending` or `Active`. Exit code 0.
    Active,
    /// Tenant `Warning`; Subscription `ExpiringSoon`. Exit code 1.
    Warning,
    /// Tenant `ReadOnly`; Subscription `GracePeriod`. Exit code 3.
    ReadOnly,
    /// Tenant `Suspended`; Subscription `Expired`. Exit code 4.
    Suspended,
    /// No such object. Exit code 5.
    NotFound,
    /// No status yet (the operator has not processed the object). Exit code 6.
    Unknown,
}

impl Verdict {
    /// 0 Active, 1 Warning, 3 ReadOnly, 4 Suspended, 5 not found, 6 unknown (2 is left to
    /// usage errors, as for every command).
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Active => 0,
            Self::Warning => 1,
            Self::ReadOnly => 3,
            Self::Suspended => 4,
            Self::NotFound => 5,
            Self::Unknown => 6,
        }
    }

    fn of_tenant(phase: Option<TenantPhase>) -> Self {
        match phase {
            Some(TenantPhase::Active) => Self::Active,
            Some(TenantPhase::Warning) => Self::Warning,
            Some(TenantPhase::ReadOnly) => Self::ReadOnly,
            Some(TenantPhase::Suspended) => Self::Suspended,
            None => Self::Unknown,
        }
    }

    fn of_subscription(phase: Option<SubscriptionPhase>) -> Self {
        match phase {
            Some(SubscriptionPhase::Pending | SubscriptionPhase::Active) => Self::Active,
            Some(SubscriptionPhase::ExpiringSoon) => Self::Warning,
            Some(SubscriptionPhase::GracePeriod) => Self::ReadOnly,
            Some(SubscriptionPhase::Expired) => Self::Suspended,
            None => Self::Unknown,
        }
    }
}

/// Why `status` could not tell; exit code 6 (unknown).
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("could not read from the cluster: {0}")]
    Kube(#[from] kube::Error),
    #[error("could not write the output: {0}")]
    Output(String),
    #[error(
        "{kind} {name:?} is stored but can not be read ({error}); the operator skips it too \
         and says so in its Stalled condition (reason InvalidObject): fix or replace the object"
    )]
    Unreadable {
        kind: String,
        name: String,
        error: String,
    },
}

impl StatusError {
    pub fn exit_code(&self) -> u8 {
        Verdict::Unknown.exit_code()
    }
}

/// One Event about the object, as shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventLine {
    pub time: Option<DateTime<Utc>>,
    pub type_: String,
    pub reason: String,
    pub message: String,
    pub count: i32,
}

/// Runs `status`, writing to `out`; returns the verdict for the exit code.
pub async fn run(
    args: &StatusArgs,
    now: DateTime<Utc>,
    out: &mut dyn Write,
) -> Result<Verdict, StatusError> {
    let client = args.cluster.client().await?;
    let shown = match &args.target {
        StatusTarget::Tenant { name } => {
            show::<Tenant, Subscription, _>(&client, name, |tenant, subs, events| {
                render_tenant(tenant, subs, events, args.events, now)
            })
            .await?
        }
        StatusTarget::Subscription { name } => {
            show::<Subscription, Tenant, _>(&client, name, |sub, tenants, events| {
                render_subscription(sub, tenants, events, args.events, now)
            })
            .await?
        }
    };
    let Some((text, verdict)) = shown else {
        return Ok(Verdict::NotFound);
    };
    out.write_all(text.as_bytes())
        .map_err(|e| StatusError::Output(e.to_string()))?;
    Ok(verdict)
}

/// Reads the `K` named `name`, every readable object of the other kind `O` (a Tenant's
/// Subscriptions, a Subscription's Tenants) and the Events about it, and renders them; `None`,
/// after saying so on standard error, when there is no such `K`.
async fn show<K, O, R>(
    client: &kube::Client,
    name: &str,
    render: R,
) -> Result<Option<(String, Verdict)>, StatusError>
where
    K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned + Clone + std::fmt::Debug,
    O: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned + Clone + std::fmt::Debug,
    R: FnOnce(&K, &[O], &Result<Vec<EventLine>, String>) -> (String, Verdict),
{
    let kind = K::kind(&());
    let Some(object) = get_readable::<K>(client, name).await? else {
        eprintln!("{kind} {name:?} not found.");
        return Ok(None);
    };
    let others = list_readable::<O>(client).await?;
    let uid = object.meta().uid.clone();
    let events = events_about(client, &kind, name, uid.as_deref()).await;
    Ok(Some(render(&object, &others, &events)))
}

async fn get_readable<K>(client: &kube::Client, name: &str) -> Result<Option<K>, StatusError>
where
    K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned + Clone + std::fmt::Debug,
{
    let api: Api<Lenient<K>> = Api::all(client.clone());
    match api.get_opt(name).await? {
        None => Ok(None),
        Some(Lenient::Good(k)) => Ok(Some(k)),
        Some(Lenient::Bad(bad)) => Err(StatusError::Unreadable {
            kind: K::kind(&()).into_owned(),
            name: name.to_string(),
            error: bad.error,
        }),
    }
}

/// The Events about a cluster-scoped `mailsec.io` object: they live in namespace `default`
/// (`involvedObject` in `core/v1`, `regarding` in `events.k8s.io/v1`: the same objects). Oldest
/// first. Events about an earlier object of the same name (another UID) are left out.
pub async fn events_about(
    client: &kube::Client,
    kind: &str,
    name: &str,
    uid: Option<&str>,
) -> Result<Vec<EventLine>, String> {
    let api: Api<Event> = Api::namespaced(client.clone(), "default");
    let params = ListParams::default().fields(&format!(
        "involvedObject.kind={kind},involvedObject.name={name}"
    ));
    let list = api.list(&params).await.map_err(|e| e.to_string())?;
    let to_chrono = |t: &k8s_openapi::jiff::Timestamp| super::check::to_chrono(t);
    let mut lines: Vec<EventLine> = list
        .items
        .into_iter()
        .filter(|e| {
            let o = &e.involved_object;
            o.api_version.as_deref().is_none_or(|v| {
                v.strip_prefix(crate::api::GROUP)
                    .is_some_and(|r| r.starts_with('/'))
            }) && match (uid, o.uid.as_deref()) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
        })
        .map(|e| {
            let time = e
                .series
                .as_ref()
                .and_then(|s| s.last_observed_time.as_ref())
                .and_then(|t| to_chrono(&t.0))
                .or_else(|| e.last_timestamp.as_ref().and_then(|t| to_chrono(&t.0)))
                .or_else(|| e.event_time.as_ref().and_then(|t| to_chrono(&t.0)))
                .or_else(|| e.first_timestamp.as_ref().and_then(|t| to_chrono(&t.0)))
                .or_else(|| {
                    e.metadata
                        .creation_timestamp
                        .as_ref()
                        .and_then(|t| to_chrono(&t.0))
                });
            EventLine {
                time,
                type_: e.type_.unwrap_or_default(),
                reason: e.reason.unwrap_or_default(),
                message: e.message.unwrap_or_default(),
                count: e
                    .series
                    .as_ref()
                    .and_then(|s| s.count)
                    .or(e.count)
                    .unwrap_or(1)
                    .max(1),
            }
        })
        .collect();
    lines.sort_by_key(|l| l.time);
    Ok(lines)
}

/// `rows` under `header`, in aligned columns, indented as the body of a section.
fn table(header: &[&str], mut rows: Vec<Vec<String>>) -> String {
    rows.insert(0, header.iter().map(|h| h.to_string()).collect());
    indent(&human::columns(&rows))
}

fn conditions_section(conditions: &[Condition]) -> String {
    if conditions.is_empty() {
        return "Conditions: none yet\n".to_string();
    }
    let mut rows = Vec::new();
    for c in conditions {
        rows.push(vec![
            c.type_.to_string(),
            format!("{:?}", c.status),
            c.reason.to_string(),
            human::instant(c.last_transition_time),
            dash(&c.message),
        ]);
    }
    format!(
        "Conditions:\n{}",
        table(&["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"], rows)
    )
}

fn events_section(
    events: &Result<Vec<EventLine>, String>,
    max: usize,
    now: DateTime<Utc>,
) -> String {
    match events {
        Err(e) => format!("Events: could not list them: {e}\n"),
        Ok(list) if list.is_empty() => "Events: none in namespace default\n".to_string(),
        Ok(list) => {
            let shown = &list[list.len().saturating_sub(max)..];
            let mut rows = Vec::new();
            for e in shown {
                rows.push(vec![
                    e.time
                        .map(|t| format!("{} ({})", human::instant(t), human::relative(now, t)))
                        .unwrap_or_else(|| "-".into()),
                    dash(&e.type_),
                    dash(&e.reason),
                    e.count.to_string(),
                    dash(&e.message),
                ]);
            }
            format!(
                "Events (newest last, {} of {}):\n{}",
                shown.len(),
                list.len(),
                table(&["LAST SEEN", "TYPE", "REASON", "COUNT", "MESSAGE"], rows)
            )
        }
    }
}

/// What the next change of a service does.
fn service_next(s: &ServiceStatus) -> Option<(DateTime<Utc>, String)> {
    let who = |tenant: &str, add_on: &str| {
        if s.base {
            tenant.to_string()
        } else {
            add_on.to_string()
        }
    };
    match s.phase {
        ServicePhase::Active => s.expiring_soon_at.map(|t| {
            (
                t,
                "ExpiringSoon: the warning period starts; the administrators are notified".into(),
            )
        }),
        ServicePhase::ExpiringSoon => s.effective_end_at.map(|t| {
            (
                t,
                format!(
                    "ReadOnly: {} (mail is still filtered)",
                    who(
                        "the whole tenant becomes read-only, the settings of every service are frozen",
                        "this add-on's settings are frozen",
                    )
                ),
            )
        }),
        ServicePhase::ReadOnly => s.suspends_at.map(|t| {
            (
                t,
                format!(
                    "Suspended: {} (no data is deleted)",
                    who(
                        "the tenant's filtering workloads are scaled to zero",
                        "this add-on's workloads are scaled to zero",
                    )
                ),
            )
        }),
        ServicePhase::Suspended => None,
    }
}

fn services_section(t: &Tenant, subs: &[Subscription], now: DateTime<Utc>) -> String {
    let Some(status) = &t.status else {
        return String::new();
    };
    if status.services.is_empty() {
        return "Services: none\n".to_string();
    }
    let mut out = String::from("Services:\n");
    for s in &status.services {
        out.push_str(&format!(
            "  {} ({}): {:?}\n",
            s.product,
            if s.base { "base" } else { "add-on" },
            s.phase
        ));
        match (&s.subscription, s.effective_end_at) {
            (Some(sub), Some(end)) => {
                let found = subs
                    .iter()
                    .find(|x| x.metadata.name.as_deref() == Some(sub.as_str()));
                let owner = found.map(|x| x.spec.tenant_ref.clone());
                // The plan in force; once coverage ended, the covering subscription's plan.
                let plan = s.plan.or(found.map(|x| x.spec.plan));
                let shared = match owner {
                    Some(o) if Some(&o) != t.metadata.name.as_ref() => {
                        format!(", owned by tenant {o} and shared with this one")
                    }
                    _ => String::new(),
                };
                let days = human::days_left(now, end);
                let left = if end > now {
                    format!("{days} day{} left", if days == 1 { "" } else { "s" })
                } else {
                    format!("ended {}", human::relative(now, end))
                };
                out.push_str(&format!(
                    "    Covered by:  subscription {sub} ({}{shared}), {}: {left}\n",
                    plan.map(|p| format!("{p:?}")).unwrap_or_else(|| "?".into()),
                    human::until(end)
                ));
            }
            _ => out.push_str(&format!(
                "    Covered by:  no subscription{}\n",
                s.missing_since
                    .map(|t| format!(" since {}", human::instant(t)))
                    .unwrap_or_default()
            )),
        }
        if let Some(since) = s
            .read_only_since
            .filter(|_| s.phase >= ServicePhase::ReadOnly)
        {
            out.push_str(&format!(
                "    Read-only:   since {}\n",
                human::instant(since)
            ));
        }
        match service_next(s) {
            Some((at, what)) => {
                out.push_str(&format!(
                    "    Next:        {} ({}): {what}\n",
                    human::from(at),
                    human::relative(now, at)
                ));
                if s.phase < ServicePhase::ReadOnly
                    && let Some(susp) = s.suspends_at
                {
                    out.push_str(&format!(
                        "    Suspends:    {} ({}) unless renewed\n",
                        human::from(susp),
                        human::relative(now, susp)
                    ));
                }
            }
            None => out.push_str(
                "    Next:        nothing scheduled: stays suspended until a subscription covers it again\n",
            ),
        }
    }
    out
}

fn tenant_actions(t: &Tenant, subs: &[Subscription], now: DateTime<Utc>) -> Vec<String> {
    let name = t.metadata.name.clone().unwrap_or_default();
    let mut actions = Vec::new();
    let Some(status) = &t.status else {
        return vec![
            "The operator has not written a status yet: is it running? (kubectl mailsec check)"
                .into(),
        ];
    };
    if let (Some(observed), Some(generation)) = (status.observed_generation, t.metadata.generation)
        && observed < generation
    {
        actions.push(format!(
            "The status is for generation {observed}, the tenant is at {generation}: the operator has not processed the latest change yet (is it running? kubectl mailsec check)"
        ));
    }
    if let Some(next) = status.next_transition_at
        && now - next > TimeDelta::minutes(1)
    {
        actions.push(format!(
            "The status should have changed {} ({}) and did not: is the operator running? (kubectl mailsec check)",
            human::from(next),
            human::relative(now, next)
        ));
    }
    for s in &status.services {
        let product = &s.product;
        match &s.subscription {
            Some(sub) if s.phase > ServicePhase::Active => {
                let owner = subs
                    .iter()
                    .find(|x| x.metadata.name.as_deref() == Some(sub.as_str()))
                    .map(|x| x.spec.tenant_ref.clone())
                    .unwrap_or_else(|| name.clone());
                let before = match s.phase {
                    ServicePhase::ExpiringSoon => s
                        .effective_end_at
                        .map(|e| format!(" {}", human::before(e)))
                        .unwrap_or_default(),
                    ServicePhase::ReadOnly => s
                        .suspends_at
                        .map(|e| format!(" before suspension {}", human::from(e)))
                        .unwrap_or_default(),
                    _ => " to restore the service".to_string(),
                };
                actions.push(format!(
                    "{product}: renew subscription {sub}{before}: raise its spec.endDate \
                     (kubectl patch subscription {sub} --type=merge -p '{{\"spec\":{{\"endDate\":\"YYYY-MM-DD\"}}}}'), \
                     or apply a new Subscription for {product} with spec.tenantRef: {owner}; while a renewal \
                     is processed, spec.extension.until extends the service"
                ));
            }
            Some(sub) if s.plan == Some(crate::api::Plan::Trial) => actions.push(format!(
                "{product}: only the trial subscription {sub} covers it: apply a Paid Subscription for {product} with spec.tenantRef: {name}{}",
                s.effective_end_at
                    .map(|e| format!(" {}", human::before(e)))
                    .unwrap_or_default()
            )),
            Some(_) => {}
            None => actions.push(format!(
                "{product}: no subscription: apply a Subscription for {product} with spec.tenantRef: {name}{}, \
                 or, if the tenant no longer uses it, remove it from spec.services and stop its labelled workloads",
                s.suspends_at
                    .filter(|t| *t > now)
                    .map(|t| format!(" before suspension {}", human::from(t)))
                    .unwrap_or_default()
            )),
        }
    }
    for sub in subs.iter().filter(|s| concerns(s, &name)) {
        let exceeded = sub.status.as_ref().and_then(|st| {
            crate::api::condition::find(&st.conditions, ConditionType::SeatLimitExceeded)
                .filter(|c| c.is_true())
        });
        if exceeded.is_some() {
            let used = sub.status.as_ref().and_then(|s| s.seats_used).unwrap_or(0);
            actions.push(format!(
                "subscription {}: {used} users for {} seats: raise its spec.seats, or lower spec.users of the tenants using it",
                sub.metadata.name.as_deref().unwrap_or("?"),
                sub.spec.seats
            ));
        }
    }
    for d in &status.possible_duplicates {
        let unused = if d.tenant_in_use == name {
            &d.tenant
        } else {
            &name
        };
        let in_use = &d.tenant_in_use;
        for sub in &d.subscriptions_to_move {
            actions.push(format!(
                "possible duplicate {}: move subscription {sub} to the tenant in use, {in_use} \
                 (kubectl patch subscription {sub} --type=merge -p '{{\"spec\":{{\"tenantRef\":\"{in_use}\"}}}}')",
                d.tenant
            ));
        }
        actions.push(format!(
            "possible duplicate {}: if tenant {unused} is not used, delete it once it owns nothing in force \
             (kubectl delete tenant {unused}); if both are used on purpose: \
             kubectl annotate tenant {name} {}={}",
            d.tenant,
            crate::api::labels::NOT_DUPLICATE_ANNOTATION,
            d.tenant
        ));
    }
    if matches!(
        status.phase,
        Some(TenantPhase::ReadOnly | TenantPhase::Suspended)
    ) {
        actions.push(
            "Meanwhile the services' settings can not be changed (the read-only admission policy refuses it); \
             Subscriptions, spec.admins, spec.users and the other fields can"
                .to_string(),
        );
    }
    actions
}

/// Other tenants that are possibly the same customer's (`status.possibleDuplicates`); nothing
/// when there are none.
fn duplicates_section(t: &Tenant) -> String {
    let found = t
        .status
        .iter()
        .flat_map(|s| s.possible_duplicates.iter())
        .collect::<Vec<_>>();
    if found.is_empty() {
        return String::new();
    }
    let mut rows = Vec::new();
    for d in found {
        rows.push(vec![
            d.tenant.clone(),
            d.shared_admins.join(","),
            d.tenant_in_use.clone(),
            dash(&d.subscriptions_to_move.join(",")),
        ]);
    }
    format!(
        "\nPossible duplicates (tenants that list the same administrator):\n{}",
        table(&["TENANT", "SHARED ADMINS", "IN USE", "TO MOVE"], rows)
    )
}

fn concerns(sub: &Subscription, tenant: &str) -> bool {
    sub.spec.tenant_ref == tenant || sub.spec.shared_with.iter().any(|t| t.0 == tenant)
}

fn actions_section(actions: &[String], none: &str) -> String {
    if actions.is_empty() {
        return format!("What to do: nothing, {none}\n");
    }
    let mut out = String::from("What to do:\n");
    for a in actions {
        out.push_str(&format!("  - {a}\n"));
    }
    out
}

fn notifications_section(t: &Tenant, now: DateTime<Utc>) -> String {
    let pending: Vec<_> = t
        .status
        .iter()
        .flat_map(|s| s.notifications.iter())
        .filter(|n| n.state != NotificationState::Delivered)
        .collect();
    if pending.is_empty() {
        return "Undelivered notifications: none\n".to_string();
    }
    let mut rows = Vec::new();
    for n in &pending {
        rows.push(vec![
            n.milestone.clone(),
            n.channel.as_str().to_string(),
            n.recipient.clone(),
            format!("{:?}", n.state),
            n.attempts.to_string(),
            n.next_attempt_at
                .map(|t| format!("{} ({})", human::instant(t), human::relative(now, t)))
                .unwrap_or_else(|| "-".into()),
            dash(n.last_error.as_deref().unwrap_or_default()),
        ]);
    }
    format!(
        "Undelivered notifications ({}):\n{}",
        pending.len(),
        table(
            &[
                "MILESTONE",
                "CHANNEL",
                "RECIPIENT",
                "STATE",
                "ATTEMPTS",
                "NEXT ATTEMPT",
                "LAST ERROR"
            ],
            rows
        )
    )
}

/// The text of `status tenant` and its verdict.
pub fn render_tenant(
    t: &Tenant,
    subs: &[Subscription],
    events: &Result<Vec<EventLine>, String>,
    max_events: usize,
    now: DateTime<Utc>,
) -> (String, Verdict) {
    let name = t.metadata.name.clone().unwrap_or_default();
    let status = t.status.as_ref();
    let phase = status.and_then(|s| s.phase);
    let verdict = Verdict::of_tenant(phase);
    let mut out = String::new();
    out.push_str(&format!(
        "Tenant:      {name}{}\n",
        t.spec
            .display_name
            .as_ref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default()
    ));
    out.push_str(&format!(
        "Phase:       {} (exit code {})\n",
        phase
            .map(|p| format!("{p:?}"))
            .unwrap_or_else(|| "unknown: no status yet".into()),
        verdict.exit_code()
    ));
    if let Some(next) = status.and_then(|s| s.next_transition_at) {
        out.push_str(&format!(
            "Next change: {} ({})\n",
            human::from(next),
            human::relative(now, next)
        ));
    }
    out.push_str(&format!(
        "Users:       {}; admins: {}\n",
        t.spec.users,
        if t.spec.admins.is_empty() {
            "none (nobody is notified)".to_string()
        } else {
            t.spec
                .admins
                .iter()
                .map(|a| a.email.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    ));
    out.push('\n');
    out.push_str(&conditions_section(
        status.map(|s| s.conditions.as_slice()).unwrap_or_default(),
    ));
    out.push('\n');
    out.push_str(&services_section(t, subs, now));
    out.push_str(&duplicates_section(t));
    out.push('\n');
    out.push_str(&actions_section(
        &tenant_actions(t, subs, now),
        "every service is covered by a paid subscription",
    ));
    out.push('\n');
    out.push_str(&notifications_section(t, now));
    out.push('\n');
    out.push_str(&events_section(events, max_events, now));
    (out, verdict)
}

/// What the next phase of a subscription does.
fn subscription_next(phase: SubscriptionPhase) -> &'static str {
    match phase {
        SubscriptionPhase::Pending => "Active: the licence starts",
        SubscriptionPhase::Active => {
            "ExpiringSoon: the warning period starts; the tenants it covers are warned and their administrators notified"
        }
        SubscriptionPhase::ExpiringSoon => {
            "GracePeriod: the licence ends; what only it covers becomes read-only (settings frozen, mail still filtered)"
        }
        SubscriptionPhase::GracePeriod => {
            "Expired: the grace period ends; what only it covers is suspended (workloads scaled to zero, no data deleted)"
        }
        SubscriptionPhase::Expired => "nothing",
    }
}

/// The text of `status subscription` and its verdict.
pub fn render_subscription(
    sub: &Subscription,
    tenants: &[Tenant],
    events: &Result<Vec<EventLine>, String>,
    max_events: usize,
    now: DateTime<Utc>,
) -> (String, Verdict) {
    let status = sub.status.as_ref();
    let verdict = Verdict::of_subscription(status.and_then(|s| s.phase));
    let mut out = subscription_summary(sub, verdict, now);
    out.push('\n');
    out.push_str(&conditions_section(
        status.map(|s| s.conditions.as_slice()).unwrap_or_default(),
    ));
    out.push('\n');
    out.push_str(&covers_section(sub, tenants));
    out.push('\n');
    out.push_str(&actions_section(
        &subscription_actions(sub),
        "the licence is in force",
    ));
    out.push('\n');
    out.push_str(&events_section(events, max_events, now));
    (out, verdict)
}

/// The head of `status subscription`: phase, owner, product, licence period, seats, transfers.
fn subscription_summary(sub: &Subscription, verdict: Verdict, now: DateTime<Utc>) -> String {
    let name = sub.metadata.name.clone().unwrap_or_default();
    let spec = &sub.spec;
    let status = sub.status.as_ref();
    let phase = status.and_then(|s| s.phase);
    let mut out = String::new();
    out.push_str(&format!("Subscription: {name}\n"));
    out.push_str(&format!(
        "Phase:        {} (exit code {})\n",
        phase
            .map(|p| format!("{p:?}"))
            .unwrap_or_else(|| "unknown: no status yet".into()),
        verdict.exit_code()
    ));
    out.push_str(&format!(
        "Owner:        tenant {}{}\n",
        spec.tenant_ref,
        if spec.shared_with.is_empty() {
            String::new()
        } else {
            format!(
                "; shared with {}",
                spec.shared_with
                    .iter()
                    .map(|t| t.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    ));
    out.push_str(&format!(
        "Product:      {} ({:?})\n",
        spec.product, spec.plan
    ));
    out.push_str(&licence_lines(sub, now));
    if let Some(grace) = status.and_then(|s| s.grace_ends_at) {
        out.push_str(&format!(
            "Grace ends:   {} ({})\n",
            human::from(grace),
            human::relative(now, grace)
        ));
    }
    match (phase, status.and_then(|s| s.next_transition_at)) {
        (Some(p), Some(next)) => out.push_str(&format!(
            "Next change:  {} ({}): {}\n",
            human::from(next),
            human::relative(now, next),
            subscription_next(p)
        )),
        (Some(_), None) => out.push_str("Next change:  none scheduled\n"),
        _ => {}
    }
    out.push_str(&format!(
        "Seats:        {} used of {}\n",
        status
            .and_then(|s| s.seats_used)
            .map(|u| u.to_string())
            .unwrap_or_else(|| "?".into()),
        spec.seats
    ));
    for t in status.iter().flat_map(|s| s.transfers.iter()) {
        out.push_str(&format!(
            "Transferred:  from {} to {} at {}\n",
            t.from,
            t.to,
            human::instant(t.at)
        ));
    }
    out
}

/// The licence period as written and, once the operator computed it, as instants with the days
/// left.
fn licence_lines(sub: &Subscription, now: DateTime<Utc>) -> String {
    let spec = &sub.spec;
    let status = sub.status.as_ref();
    let written = format!(
        "startDate {}, endDate {}{}",
        spec.start_date.as_str(),
        spec.end_date.as_str(),
        spec.extension
            .as_ref()
            .map(|x| format!(
                ", extended until {}{}",
                x.until.as_str(),
                x.reason
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ))
            .unwrap_or_default()
    );
    match (
        status.and_then(|s| s.starts_at),
        status.and_then(|s| s.effective_end_at),
    ) {
        (Some(start), Some(end)) => {
            let left = if end > now {
                human::days_left(now, end).to_string()
            } else {
                format!("ended {}", human::relative(now, end))
            };
            format!(
                "Licence:      from {} {} ({written})\nDays left:    {left}\n",
                human::instant(start),
                human::until(end)
            )
        }
        _ => format!("Licence:      {written}\n"),
    }
}

/// The tenants a subscription is meant to cover, and whether it is what covers them.
fn covers_section(sub: &Subscription, tenants: &[Tenant]) -> String {
    let name = sub.metadata.name.clone().unwrap_or_default();
    let spec = &sub.spec;
    let mut rows = Vec::new();
    let parties = std::iter::once((spec.tenant_ref.as_str(), "owner")).chain(
        spec.shared_with
            .iter()
            .map(|t| (t.0.as_str(), "shared with")),
    );
    for (tenant, role) in parties {
        let found = tenants
            .iter()
            .find(|t| t.metadata.name.as_deref() == Some(tenant));
        let service = found
            .and_then(|t| t.status.as_ref())
            .and_then(|s| s.services.iter().find(|s| s.product == spec.product));
        rows.push(vec![
            tenant.to_string(),
            role.to_string(),
            match found {
                None => "not found".to_string(),
                Some(t) => t
                    .status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .map(|p| format!("{p:?}"))
                    .unwrap_or_else(|| "-".into()),
            },
            service
                .map(|s| format!("{:?}", s.phase))
                .unwrap_or_else(|| "-".into()),
            service
                .and_then(|s| s.subscription.clone())
                .map(|s| {
                    if s == name {
                        format!("{s} (this one)")
                    } else {
                        s
                    }
                })
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    format!(
        "Covers:\n{}",
        table(
            &[
                "TENANT",
                "ROLE",
                "TENANT PHASE",
                "SERVICE PHASE",
                "COVERED BY"
            ],
            rows
        )
    )
}

/// What to do about a subscription: a stale status, a lapse, a trial, exceeded seats, not ready.
fn subscription_actions(sub: &Subscription) -> Vec<String> {
    let name = sub.metadata.name.clone().unwrap_or_default();
    let spec = &sub.spec;
    let status = sub.status.as_ref();
    let phase = status.and_then(|s| s.phase);
    let mut actions = Vec::new();
    if let (Some(observed), Some(generation)) = (
        status.and_then(|s| s.observed_generation),
        sub.metadata.generation,
    ) && observed < generation
    {
        actions.push(format!(
            "The status is for generation {observed}, the subscription is at {generation}: the operator has not processed the latest change yet (is it running? kubectl mailsec check)"
        ));
    }
    if matches!(
        phase,
        Some(
            SubscriptionPhase::ExpiringSoon
                | SubscriptionPhase::GracePeriod
                | SubscriptionPhase::Expired
        )
    ) {
        actions.push(format!(
            "Renew: raise spec.endDate (kubectl patch subscription {name} --type=merge -p '{{\"spec\":{{\"endDate\":\"YYYY-MM-DD\"}}}}'), \
             or apply a new Subscription for {} with spec.tenantRef: {}; while a renewal is processed, \
             spec.extension.until extends the service (with a reason)",
            spec.product, spec.tenant_ref
        ));
    }
    if spec.plan == crate::api::Plan::Trial {
        actions.push(format!(
            "This is a trial: apply a Paid Subscription for {} to keep the service",
            spec.product
        ));
    }
    for c in status.iter().flat_map(|s| s.conditions.iter()) {
        if c.is(ConditionType::SeatLimitExceeded) && c.is_true() {
            actions.push(format!(
                "Seats exceeded: raise spec.seats or lower spec.users of the tenants using it ({})",
                c.message
            ));
        }
        if c.is(ConditionType::Ready) && !c.is_true() {
            actions.push(format!("Not ready ({}): {}", c.reason, c.message));
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Policy, World, evaluate_world};
    use crate::fixtures;

    fn at(s: &str) -> DateTime<Utc> {
        crate::cli::evaluate::parse_at(s).expect("instant")
    }

    #[test]
    fn a_tenant_without_status_is_unknown() {
        let t = fixtures::tenant("acme", &["email-safeguard"], 5);
        let (text, verdict) = render_tenant(&t, &[], &Ok(vec![]), 10, at("2026-12-15"));
        assert_eq!((verdict, verdict.exit_code()), (Verdict::Unknown, 6));
        assert!(text.contains("unknown: no status yet"), "{text}");
        assert!(text.contains("is it running?"), "{text}");
    }

    /// The late renewal of examples/09 before the transfer: the tenant in use is shown the
    /// other tenant, the subscription to move and the commands that repair it.
    #[test]
    fn a_possible_duplicate_is_shown_with_the_commands_that_repair_it() {
        let mut used = fixtures::tenant("soylent", &["email-safeguard"], 80);
        let mut unused = fixtures::tenant("soylent-new", &[], 0);
        unused.spec.admins = used.spec.admins.clone();
        let subs = vec![
            fixtures::subscription(
                "esg-2025",
                "soylent",
                "email-safeguard",
                "2025-11-15",
                "2026-11-14",
                100,
            ),
            fixtures::subscription(
                "esg-2026",
                "soylent-new",
                "email-safeguard",
                "2026-11-15",
                "2027-11-14",
                100,
            ),
        ];
        let world = World {
            tenants: vec![used.clone(), unused],
            subscriptions: subs.clone(),
        };
        let now = at("2026-11-29");
        let eval = evaluate_world(&world, &Policy::default(), now);
        used.status = Some(eval.tenants[0].status.clone());
        let (text, _) = render_tenant(&used, &subs, &Ok(vec![]), 10, now);
        assert!(
            text.contains("Possible duplicates (tenants that list the same administrator):"),
            "{text}"
        );
        assert!(
            text.contains("soylent-new  admin@soylent.example  soylent  esg-2026"),
            "{text}"
        );
        assert!(
            text.contains(
                "move subscription esg-2026 to the tenant in use, soylent (kubectl patch subscription esg-2026 --type=merge -p '{\"spec\":{\"tenantRef\":\"soylent\"}}')"
            ),
            "{text}"
        );
        assert!(
            text.contains("if tenant soylent-new is not used, delete it once it owns nothing in force (kubectl delete tenant soylent-new)"),
            "{text}"
        );
    }

    #[test]
    fn a_stale_status_says_so_and_the_status_is_as_stored() {
        let sub = fixtures::subscription(
            "acme-esg",
            "acme",
            "email-safeguard",
            "2026-01-01",
            "2026-12-31",
            10,
        );
        let mut tenant = fixtures::tenant("acme", &["email-safeguard"], 5);
        let world = World {
            tenants: vec![tenant.clone()],
            subscriptions: vec![sub.clone()],
        };
        // The operator last wrote the status on 15 Dec; nothing since.
        let eval = evaluate_world(&world, &Policy::default(), at("2026-12-15"));
        tenant.status = Some(eval.tenants[0].status.clone());
        let events = Ok(vec![EventLine {
            time: Some(at("2026-12-02")),
            type_: "Warning".into(),
            reason: "ExpiringSoon".into(),
            message: "Subscription acme-esg ends soon".into(),
            count: 1,
        }]);
        let (text, verdict) = render_tenant(&tenant, &[sub], &events, 10, at("2027-01-05"));
        assert_eq!(verdict, Verdict::Warning, "{text}");
        assert!(
            text.contains("until the end of 31 Dec 2026 (UTC): ended 4 days ago"),
            "{text}"
        );
        assert!(
            text.contains("The status should have changed at the start of 1 Jan 2027 (00:00 UTC)"),
            "{text}"
        );
        assert!(
            text.contains("ExpiringSoon  1      Subscription acme-esg ends soon"),
            "{text}"
        );
    }
}
