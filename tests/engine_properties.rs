//! Property tests of the pure lifecycle engine.
//!
//! 1. It never panics on any input the CRD schema lets through, and its status round-trips
//!    through JSON (what the API server stores).
//! 2. With paid subscriptions that have all started and enough seats, phases only move forward as
//!    time passes (trials ending into paid licences and renewals starting later legitimately move
//!    a tenant back to Active, so they are excluded here and covered by example tests).
//! 3. Nothing changes strictly before the announced next transition, and something does at it.
//! 4. Adding a paid subscription within its seats, or extending one, never makes the phase of a
//!    service the tenant had worse (nor the tenant's, unless the subscription brings a product of
//!    its own: it then is a service, which may warn).
//!    "Adding" means buying one that has not ended yet: a licence that ended long ago reveals
//!    that coverage ended then, which can legitimately be worse than "missing since now".
//! 5. Possible duplicates: symmetric (both tenants flag each other, agree on the tenant in use
//!    and the moves), exactly the pairs that share an address (compared case-insensitively) and
//!    are not linked by a shared subscription or the annotation; never a change of phase.
//! 6. First sight: a tenant seen for the first time with a late milestone costs at most one
//!    milestone Event (its milestones all recorded `alreadyDue`, or only one of them); without
//!    a late one, or once its status is written, nothing is recorded `alreadyDue`.
//! 7. What a tenant's evaluation reads of each subscription (phase, dates, seats) is what the
//!    subscription's own evaluation finds, on any world the schema lets through.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use mailsec_operator::api::ConditionType;
use proptest::prelude::*;

use mailsec_operator::api::date::LICENSE_DATE_PATTERN;
use mailsec_operator::api::labels::NOT_DUPLICATE_ANNOTATION;
use mailsec_operator::api::{
    Admin, ConditionStatus, LicenseDate, Plan, PossibleDuplicate, ServicePhase, Subscription,
    SubscriptionPhase, TenantPhase, TenantStatus,
};
use mailsec_operator::engine::{
    Policy, TenantInput, World, evaluate_subscription, evaluate_tenant, evaluate_world,
};
use mailsec_operator::fixtures::{extended, shared, subscription, tenant};

const PRODUCTS: [&str; 4] = [
    "email-safeguard",
    "email-threat-isolation",
    "email-threat-detection-response",
    "email-other",
];
const TENANTS: [&str; 3] = ["t0", "t1", "t2"];

fn epoch() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .expect("epoch")
        .with_timezone(&Utc)
}

/// A date in the spec: a bare date (day offset from the epoch) or an RFC 3339 time (seconds offset).
#[derive(Clone, Debug)]
enum SpecDate {
    Day(i64),
    Instant(i64, i32),
}

impl SpecDate {
    fn text(&self) -> String {
        match self {
            SpecDate::Day(d) => (epoch().date_naive() + TimeDelta::days(*d))
                .format("%Y-%m-%d")
                .to_string(),
            SpecDate::Instant(s, offset_min) => {
                let tz = chrono::FixedOffset::east_opt(offset_min * 60)
                    .unwrap_or(chrono::FixedOffset::east_opt(0).expect("utc"));
                (epoch() + TimeDelta::seconds(*s))
                    .with_timezone(&tz)
                    .to_rfc3339()
            }
        }
    }
}

fn spec_date(days: std::ops::Range<i64>) -> impl Strategy<Value = SpecDate> {
    let secs = (days.start * 86_400)..(days.end * 86_400);
    prop_oneof![
        days.prop_map(SpecDate::Day),
        (secs, -720i32..=840).prop_map(|(s, o)| SpecDate::Instant(s, o))
    ]
}

#[derive(Clone, Debug)]
struct SubGen {
    owner: usize,
    shared_with: Vec<usize>,
    product: usize,
    trial: bool,
    start: SpecDate,
    length_days: i64,
    seats: i64,
    extension_days: Option<i64>,
}

fn sub_gen() -> impl Strategy<Value = SubGen> {
    (
        0..TENANTS.len(),
        proptest::collection::vec(0..TENANTS.len(), 0..3),
        0..PRODUCTS.len(),
        any::<bool>(),
        spec_date(-400..400),
        1i64..800,
        1i64..2_000,
        proptest::option::of(1i64..200),
    )
        .prop_map(
            |(owner, shared_with, product, trial, start, length_days, seats, extension_days)| {
                SubGen {
                    owner,
                    shared_with,
                    product,
                    trial,
                    start,
                    length_days,
                    seats,
                    extension_days,
                }
            },
        )
}

impl SubGen {
    fn build(&self, i: usize) -> Subscription {
        let start = self.start.text();
        let end = match &self.start {
            SpecDate::Day(d) => SpecDate::Day(d + self.length_days - 1),
            SpecDate::Instant(s, o) => SpecDate::Instant(s + self.length_days * 86_400, *o),
        };
        let mut sub = subscription(
            &format!("s{i}"),
            TENANTS[self.owner],
            PRODUCTS[self.product],
            &start,
            &end.text(),
            self.seats,
        );
        if self.trial {
            sub.spec.plan = Plan::Trial;
        }
        let mut others: Vec<&str> = self
            .shared_with
            .iter()
            .filter(|t| **t != self.owner)
            .map(|t| TENANTS[*t])
            .collect();
        others.sort();
        others.dedup();
        sub = shared(sub, &others);
        if let Some(days) = self.extension_days {
            let until = match &end {
                SpecDate::Day(d) => SpecDate::Day(d + days),
                SpecDate::Instant(s, o) => SpecDate::Instant(s + days * 86_400, *o),
            };
            sub = extended(sub, &until.text());
        }
        sub
    }
}

#[derive(Clone, Debug)]
struct WorldGen {
    /// Each tenant's administrator addresses, from [`ADDRESSES`].
    admins: Vec<Vec<usize>>,
    services: Vec<Vec<usize>>,
    users: Vec<i64>,
    subs: Vec<SubGen>,
    warning_secs: i64,
    grace_secs: i64,
}

/// A small pool, so that tenants often share an address; the same address in other cases.
const ADDRESSES: [&str; 5] = [
    "admin@acme.example",
    "ADMIN@Acme.Example",
    "it@acme.example",
    "ops@other.example",
    "solo@t.example",
];

fn world_gen() -> impl Strategy<Value = WorldGen> {
    (
        proptest::collection::vec(
            proptest::collection::vec(0..ADDRESSES.len(), 1..3),
            TENANTS.len(),
        ),
        proptest::collection::vec(
            proptest::collection::vec(0..PRODUCTS.len(), 0..4),
            TENANTS.len(),
        ),
        proptest::collection::vec(0i64..1_500, TENANTS.len()),
        proptest::collection::vec(sub_gen(), 0..7),
        0i64..(60 * 86_400),
        0i64..(60 * 86_400),
    )
        .prop_map(
            |(admins, services, users, subs, warning_secs, grace_secs)| WorldGen {
                admins,
                services,
                users,
                subs,
                warning_secs,
                grace_secs,
            },
        )
}

impl WorldGen {
    fn world(&self) -> World {
        let tenants = TENANTS
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let mut products: Vec<&str> =
                    self.services[i].iter().map(|p| PRODUCTS[*p]).collect();
                products.sort();
                products.dedup();
                let mut t = tenant(name, &products, self.users[i]);
                t.spec.admins = self.admins[i]
                    .iter()
                    .map(|a| Admin {
                        email: ADDRESSES[*a].to_string(),
                        name: None,
                    })
                    .collect();
                t
            })
            .collect();
        World {
            tenants,
            subscriptions: self
                .subs
                .iter()
                .enumerate()
                .map(|(i, s)| s.build(i))
                .collect(),
        }
    }

    fn policy(&self) -> Policy {
        Policy {
            warning_period: TimeDelta::seconds(self.warning_secs),
            grace_period: TimeDelta::seconds(self.grace_secs),
            ..Policy::default()
        }
    }
}

/// Product, phase and plan in force of one service.
type ServiceSnapshot = (String, ServicePhase, Option<Plan>);

/// Everything whose change the next transition announces.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Snapshot {
    tenants: Vec<(Option<TenantPhase>, Vec<ServiceSnapshot>)>,
    duplicates: Vec<Vec<PossibleDuplicate>>,
    subscriptions: Vec<(Option<SubscriptionPhase>, bool)>,
}

fn snapshot(world: &World, policy: &Policy, now: DateTime<Utc>) -> Snapshot {
    let ev = evaluate_world(world, policy, now);
    Snapshot {
        tenants: ev
            .tenants
            .iter()
            .map(|t| {
                (
                    t.status.phase,
                    t.status
                        .services
                        .iter()
                        .map(|s| (s.product.to_string(), s.phase, s.plan))
                        .collect(),
                )
            })
            .collect(),
        duplicates: ev
            .tenants
            .iter()
            .map(|t| t.status.possible_duplicates.clone())
            .collect(),
        subscriptions: ev
            .subscriptions
            .iter()
            .map(|s| (s.status.phase, s.seats_exceeded))
            .collect(),
    }
}

/// The world with each tenant's status replaced by its evaluation at `now` (as after a reconcile).
fn reconciled(mut world: World, policy: &Policy, now: DateTime<Utc>) -> World {
    let ev = evaluate_world(&world, policy, now);
    for (t, e) in world.tenants.iter_mut().zip(ev.tenants) {
        t.status = Some(e.status);
    }
    for (s, e) in world.subscriptions.iter_mut().zip(ev.subscriptions) {
        s.status = Some(e.status);
    }
    world
}

fn at_offset(secs: i64) -> DateTime<Utc> {
    epoch() + TimeDelta::seconds(secs)
}

const YEAR: i64 = 366 * 86_400;

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn next_transition_is_exact(input in world_gen(), now_secs in (-2 * YEAR)..(3 * YEAR), fractions in proptest::collection::vec(0.0f64..1.0, 1..6)) {
        let policy = input.policy();
        let now = at_offset(now_secs);
        let world = reconciled(input.world(), &policy, now);
        let ev = evaluate_world(&world, &policy, now);
        let next = ev.tenants.iter().filter_map(|t| t.next_transition)
            .chain(ev.subscriptions.iter().filter_map(|s| s.next_transition))
            .min();
        let before = snapshot(&world, &policy, now);
        let horizon = next.unwrap_or(now + TimeDelta::seconds(10 * YEAR));
        let span = (horizon - now).num_seconds();
        for f in fractions {
            let t = now + TimeDelta::seconds(((span - 1) as f64 * f) as i64);
            prop_assert_eq!(&snapshot(&world, &policy, t), &before, "changed at {} before the next transition {:?}", t, next);
        }
        if span > 1 {
            prop_assert_eq!(&snapshot(&world, &policy, horizon - TimeDelta::seconds(1)), &before, "one second before {:?}", next);
        }
        if let Some(next) = next {
            prop_assert_ne!(&snapshot(&world, &policy, next), &before, "nothing changed at the announced transition {}", next);
        }
    }

    #[test]
    fn phases_only_move_forward(input in world_gen(), steps in proptest::collection::vec(0i64..(120 * 86_400), 1..8)) {
        // Paid only, every subscription started before the first instant, enough seats.
        let mut input = input;
        for s in &mut input.subs {
            s.trial = false;
            s.seats = 1_000_000;
        }
        let policy = input.policy();
        let mut world = input.world();
        let first = world.subscriptions.iter().filter_map(|s| s.spec.start_date.start_instant().ok()).max().unwrap_or(epoch());
        let mut now = first;
        let mut last = snapshot(&world, &policy, now);
        world = reconciled(world, &policy, now);
        for step in steps {
            now += TimeDelta::seconds(step);
            let snap = snapshot(&world, &policy, now);
            for ((before, after), t) in last.tenants.iter().zip(&snap.tenants).zip(TENANTS) {
                prop_assert!(after.0 >= before.0, "{} went from {:?} back to {:?} at {}", t, before.0, after.0, now);
                for (b, a) in before.1.iter().zip(&after.1) {
                    prop_assert!(a.1 >= b.1, "{} {} went from {:?} back to {:?} at {}", t, a.0, b.1, a.1, now);
                }
            }
            for (b, a) in last.subscriptions.iter().zip(&snap.subscriptions) {
                prop_assert!(a.0 >= b.0, "a subscription went from {:?} back to {:?}", b.0, a.0);
            }
            world = reconciled(world, &policy, now);
            last = snap;
        }
    }

    #[test]
    fn more_or_longer_paid_coverage_never_hurts(
        input in world_gen(),
        extra in sub_gen(),
        extend_which in any::<proptest::sample::Index>(),
        extend_days in 1i64..400,
        now_secs in (-YEAR)..(2 * YEAR),
    ) {
        let policy = input.policy();
        let now = at_offset(now_secs);
        let world = input.world();
        let before = snapshot(&world, &policy, now);

        let mut extra = extra;
        extra.trial = false;
        extra.seats = i64::MAX;
        let mut more = world.clone();
        let bought = extra.build(99);
        let not_ended = bought.spec.end_date.end_instant().map(|e| e > now).unwrap_or(false);
        more.subscriptions.push(bought);
        let after_more = if not_ended { snapshot(&more, &policy, now) } else { before.clone() };

        let mut longer = world.clone();
        if !longer.subscriptions.is_empty() {
            let i = extend_which.index(longer.subscriptions.len());
            let s = &mut longer.subscriptions[i];
            // Within its seats, as for an added one: a licence brought back into force can
            // otherwise legitimately warn about its seat limit.
            s.spec.seats = i64::MAX;
            if let Ok(end) = s.spec.end_date.end_instant() {
                let current = s.spec.extension.as_ref().and_then(|e| e.until.end_instant().ok()).unwrap_or(end).max(end);
                s.spec.extension = Some(mailsec_operator::api::Extension {
                    until: LicenseDate::new(mailsec_operator::api::date::format_instant(current + TimeDelta::days(extend_days))),
                    reason: None,
                });
            }
        }
        let after_longer = snapshot(&longer, &policy, now);

        for after in [&after_more, &after_longer] {
            for (((b_phase, b_services), (a_phase, a_services)), t) in before.tenants.iter().zip(&after.tenants).zip(TENANTS) {
                // A subscription for a product the tenant did not have makes that product one of
                // its services (a new one may warn: it ends soon, or is a trial); the services it
                // had never get worse, and without a new service neither does the tenant.
                let new_service = a_services.iter().any(|a| !b_services.iter().any(|b| b.0 == a.0));
                if !new_service {
                    prop_assert!(a_phase <= b_phase, "{}: {:?} became {:?}", t, b_phase, a_phase);
                }
                for b in b_services {
                    let a = a_services.iter().find(|a| a.0 == b.0);
                    prop_assert!(a.is_some_and(|a| a.1 <= b.1), "{} {}: {:?} became {:?}", t, b.0, b.1, a.map(|a| a.1));
                }
            }
        }
    }
}

fn duplicate_condition(status: &TenantStatus) -> Option<(ConditionStatus, String)> {
    mailsec_operator::api::condition::find(&status.conditions, ConditionType::PossibleDuplicate)
        .map(|c| (c.status, c.reason.to_string()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn possible_duplicates_are_symmetric_exact_and_never_change_a_phase(
        input in world_gen(),
        now_secs in (-YEAR)..(2 * YEAR),
        annotate in proptest::option::of((0..TENANTS.len(), 0..TENANTS.len())),
    ) {
        let policy = input.policy();
        let now = at_offset(now_secs);
        let mut world = input.world();
        if let Some((on, names)) = annotate {
            world.tenants[on].metadata.annotations.get_or_insert_default()
                .insert(NOT_DUPLICATE_ANNOTATION.into(), format!("x, {}", TENANTS[names]));
        }
        let ev = evaluate_world(&world, &policy, now);
        let lower = |i: usize| -> std::collections::BTreeSet<String> {
            world.tenants[i].spec.admins.iter().map(|a| a.email.to_lowercase()).collect()
        };
        let annotated = |i: usize, j: usize| {
            world.tenants[i].metadata.annotations.as_ref()
                .and_then(|a| a.get(NOT_DUPLICATE_ANNOTATION))
                .is_some_and(|v| v.split(',').any(|n| n.trim() == TENANTS[j]))
        };
        for (i, name_i) in TENANTS.iter().enumerate() {
            let flagged = &ev.tenants[i].status.possible_duplicates;
            for (j, name_j) in TENANTS.iter().enumerate() {
                if i == j { continue; }
                let shares = !lower(i).is_disjoint(&lower(j));
                let linked = annotated(i, j) || annotated(j, i)
                    || world.subscriptions.iter().any(|s| s.concerns(name_i) && s.concerns(name_j));
                let i_flags_j = flagged.iter().find(|d| d.tenant == *name_j);
                let j_flags_i = ev.tenants[j].status.possible_duplicates.iter().find(|d| d.tenant == *name_i);
                prop_assert_eq!(i_flags_j.is_some(), shares && !linked, "{} flags {}: shares {}, linked {}", name_i, name_j, shares, linked);
                prop_assert_eq!(i_flags_j.is_some(), j_flags_i.is_some(), "symmetric");
                if let (Some(a), Some(b)) = (i_flags_j, j_flags_i) {
                    prop_assert_eq!(&a.tenant_in_use, &b.tenant_in_use);
                    prop_assert_eq!(&a.subscriptions_to_move, &b.subscriptions_to_move);
                    prop_assert_eq!(&a.shared_admins, &b.shared_admins);
                }
            }
            let expected = if flagged.is_empty() {
                (ConditionStatus::False, "NoDuplicate".to_string())
            } else {
                (ConditionStatus::True, "SharesAdmins".to_string())
            };
            prop_assert_eq!(duplicate_condition(&ev.tenants[i].status), Some(expected));
        }

        // The same world with every address distinct and upper-case: no finding, same phases.
        let mut apart = world.clone();
        for (i, t) in apart.tenants.iter_mut().enumerate() {
            for (k, a) in t.spec.admins.iter_mut().enumerate() {
                a.email = format!("ADMIN{k}@T{i}.EXAMPLE");
            }
        }
        let ev_apart = evaluate_world(&apart, &policy, now);
        for (a, b) in ev.tenants.iter().zip(&ev_apart.tenants) {
            prop_assert!(b.status.possible_duplicates.is_empty());
            prop_assert_eq!(a.status.phase, b.status.phase);
            prop_assert_eq!(&a.status.services, &b.status.services);
        }

        // Upper-casing every address changes nothing at all.
        let mut shouting = world.clone();
        for t in &mut shouting.tenants {
            for a in &mut t.spec.admins {
                a.email = a.email.to_uppercase();
            }
        }
        let ev_shouting = evaluate_world(&shouting, &policy, now);
        for (a, b) in ev.tenants.iter().zip(&ev_shouting.tenants) {
            prop_assert_eq!(&a.status, &b.status);
        }
    }
}

/// Dates matching the schema's pattern, including impossible ones the CEL rules reject.
fn any_schema_date() -> impl Strategy<Value = String> {
    let pattern = LICENSE_DATE_PATTERN
        .trim_start_matches('^')
        .trim_end_matches('$');
    proptest::string::string_regex(pattern).expect("the schema pattern is a valid regex")
}

fn arbitrary_world() -> impl Strategy<Value = (World, Policy, DateTime<Utc>)> {
    let sub = (
        0..TENANTS.len() + 1,
        proptest::collection::vec(0..TENANTS.len() + 1, 0..4),
        0..PRODUCTS.len(),
        any::<bool>(),
        any_schema_date(),
        any_schema_date(),
        proptest::option::of(any_schema_date()),
        1i64..=i64::MAX,
    );
    (
        proptest::collection::vec(sub, 0..6),
        proptest::collection::vec(0i64..=i64::MAX, TENANTS.len()),
        0i64..=(36_500 * 86_400),
        0i64..=(36_500 * 86_400),
        -62_000_000_000i64..253_000_000_000,
    )
        .prop_map(|(subs, users, w, g, now)| {
            let name = |i: usize| TENANTS.get(i).copied().unwrap_or("ghost");
            let tenants = TENANTS
                .iter()
                .zip(&users)
                .map(|(n, u)| tenant(n, &PRODUCTS, *u))
                .collect();
            let subscriptions = subs
                .into_iter()
                .enumerate()
                .map(
                    |(i, (owner, share, product, trial, start, end, ext, seats))| {
                        let mut s = subscription(
                            &format!("s{i}"),
                            name(owner),
                            PRODUCTS[product],
                            &start,
                            &end,
                            seats,
                        );
                        s.spec.shared_with = share.into_iter().map(|t| name(t).into()).collect();
                        if trial {
                            s.spec.plan = Plan::Trial;
                        }
                        if let Some(until) = ext {
                            s = extended(s, &until);
                        }
                        s
                    },
                )
                .collect();
            let policy = Policy {
                warning_period: TimeDelta::seconds(w),
                grace_period: TimeDelta::seconds(g),
                ..Policy::default()
            };
            let now = DateTime::from_timestamp(now, 0).unwrap_or(epoch());
            (
                World {
                    tenants,
                    subscriptions,
                },
                policy,
                now,
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_and_status_round_trips((world, policy, now) in arbitrary_world()) {
        let world = reconciled(world, &policy, now);
        let ev = evaluate_world(&world, &policy, now + TimeDelta::days(1));
        for t in &ev.tenants {
            let json = serde_json::to_value(&t.status).expect("status serializes");
            let back: TenantStatus = serde_json::from_value(json).expect("status deserializes");
            prop_assert_eq!(&back, &t.status);
        }
        for s in &ev.subscriptions {
            let json = serde_json::to_value(&s.status).expect("status serializes");
            let back: mailsec_operator::api::SubscriptionStatus = serde_json::from_value(json).expect("status deserializes");
            prop_assert_eq!(&back, &s.status);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn a_tenant_reads_its_subscriptions_as_they_evaluate_themselves((world, policy, now) in arbitrary_world()) {
        let users = world.users();
        let subs: Vec<&Subscription> = world.subscriptions.iter().collect();
        for t in &world.tenants {
            let ev = evaluate_tenant(&TenantInput::new(t, &subs, &users), &policy, now);
            for (name, read) in &ev.subscriptions {
                let sub = world
                    .subscriptions
                    .iter()
                    .find(|s| s.metadata.name.as_deref() == Some(name.as_str()))
                    .expect("a subscription of the world");
                let own = evaluate_subscription(sub, &users, &policy, now);
                prop_assert_eq!(read.timeline, own.timeline);
                prop_assert_eq!(read.next_transition, own.next_transition);
                prop_assert_eq!((read.seats_used, read.seats_exceeded), (own.seats_used, own.seats_exceeded));
                let dates = |s: &mailsec_operator::api::SubscriptionStatus| {
                    (s.phase, s.starts_at, s.effective_end_at, s.expiring_soon_at, s.grace_ends_at, s.next_transition_at, s.seats_used)
                };
                prop_assert_eq!(dates(&read.status), dates(&own.status));
                prop_assert!(read.status.conditions.is_empty() && read.changes.is_empty());
            }
        }
    }
}

#[test]
fn generated_dates_read_back() {
    // Guard for the generators above: both date forms parse to the intended instants.
    assert_eq!(SpecDate::Day(0).text(), "2026-01-01");
    let d = LicenseDate::new(SpecDate::Instant(3_600, 540).text());
    assert_eq!(d.start_instant().ok(), Some(epoch() + TimeDelta::hours(1)));
    assert!(NaiveDate::from_ymd_opt(2026, 1, 1).is_some());
}

/// How many milestone Events the records of the milestones announced now stand for: one for
/// the `alreadyDue` group, one for each other record.
fn events_for(status: &TenantStatus, fresh: &[mailsec_operator::engine::Milestone]) -> usize {
    let records: Vec<_> = status
        .milestones
        .iter()
        .filter(|r| fresh.iter().any(|m| m.id == r.id))
        .collect();
    let grouped = records.iter().any(|r| r.already_due);
    usize::from(grouped) + records.iter().filter(|r| !r.already_due).count()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn at_first_sight_a_tenant_with_late_milestones_costs_one_event(
        input in world_gen(),
        now_secs in (-YEAR)..(2 * YEAR),
        later_secs in 1i64..(200 * 86_400),
    ) {
        let policy = input.policy();
        let now = at_offset(now_secs);
        let world = input.world();
        let ev = evaluate_world(&world, &policy, now);
        for t in &ev.tenants {
            prop_assert_eq!(t.status.milestones.len(), t.milestones.len(), "at first sight every record is new");
            if t.milestones.iter().any(|m| m.late) {
                prop_assert!(events_for(&t.status, &t.milestones) <= 1, "{:?}", t.status.milestones);
            } else {
                prop_assert!(t.status.milestones.iter().all(|r| !r.already_due), "news is announced on its own");
            }
        }
        let seen = reconciled(world, &policy, now);
        let later = now + TimeDelta::seconds(later_secs);
        let ev = evaluate_world(&seen, &policy, later);
        for t in &ev.tenants {
            prop_assert_eq!(events_for(&t.status, &t.milestones), t.milestones.len(), "seen before: one Event per milestone");
        }
    }
}
