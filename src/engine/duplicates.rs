//! Possible duplicate tenants: two tenants that share an administrator's e-mail address.
//!
//! A renewal processed late can land the new contract on a second, new tenant, while the tenant
//! in use warns, goes read-only and is suspended although the customer has paid. Two tenants
//! that share an administrator are flagged, unless they are linked on purpose: a subscription
//! shared between them (a merger keeps both tenants and their people) or the annotation
//! [`NOT_DUPLICATE_ANNOTATION`] on either one. The finding never changes a phase; it names the
//! other tenant and the shared address and, when one tenant holds a subscription the other one
//! lacks, says which subscription to move where.
//!
//! Pure: the caller gathers the other tenants through an index by address (never every pair).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::Policy;
use super::subscription::Timeline;
use crate::api::labels::NOT_DUPLICATE_ANNOTATION;
use crate::api::{Subscription, Tenant};

/// An address listed by more tenants than this (a reseller's or a help desk's) says nothing about
/// duplicates: it is not compared, so that no address makes the check quadratic.
pub const MAX_TENANTS_PER_ADDRESS: usize = 16;

/// At most this many possible duplicates are reported per tenant (in status and messages); a
/// longer list is cut and says how many more there are.
pub const MAX_REPORTED: usize = 8;
/// At most this many shared addresses are named per pair.
pub const MAX_ADDRESSES: usize = 4;
/// At most this many subscriptions to move are named per pair.
pub const MAX_MOVES: usize = 8;

/// Another tenant that shares at least one administrator address with the tenant evaluated
/// (found through an index by address), with the subscriptions that concern it.
#[derive(Clone, Copy, Debug)]
pub struct Neighbour<'a> {
    pub tenant: &'a Tenant,
    /// Subscriptions owned by or shared with the neighbour (others are ignored).
    pub subscriptions: &'a [&'a Subscription],
}

/// One tenant and its subscriptions: either side of a pair.
#[derive(Clone, Copy, Debug)]
struct Side<'a> {
    tenant: &'a Tenant,
    name: &'a str,
    subscriptions: &'a [&'a Subscription],
}

/// A subscription the tenant in use should own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    pub subscription: String,
    pub product: String,
    /// The tenant that owns it now.
    pub from: String,
    pub effective_end_at: DateTime<Utc>,
}

/// Two tenants that are possibly one customer's, seen from one of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Duplicate {
    /// The other tenant.
    pub other: String,
    /// The addresses both tenants list, lower-case, sorted (all of them).
    pub shared_admins: Vec<String>,
    /// The tenant the hint assumes is the one in use (this one or `other`).
    pub in_use: String,
    /// Subscriptions of the unused tenant, not ended, for products the tenant in use is not
    /// covered for as long: what to move to the tenant in use.
    pub moves: Vec<Move>,
    /// What the finding means and what to do, from this tenant's side.
    pub message: String,
}

/// Lower-case administrator addresses of a tenant, without duplicates: the keys of the index.
pub fn admin_addresses(tenant: &Tenant) -> BTreeSet<String> {
    tenant
        .spec
        .admins
        .iter()
        .map(|a| a.email.trim().to_lowercase())
        .filter(|a| !a.is_empty())
        .collect()
}

/// The tenants `tenant` names in its [`NOT_DUPLICATE_ANNOTATION`].
fn declared_distinct(tenant: &Tenant) -> impl Iterator<Item = &str> {
    tenant
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NOT_DUPLICATE_ANNOTATION))
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
}

/// Why a pair that shares administrators is not a possible duplicate, if it is linked on purpose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    /// A subscription owned by one and shared with the other (or shared with both).
    SharedSubscription(String),
    /// One of them carries [`NOT_DUPLICATE_ANNOTATION`] naming the other.
    Annotation,
}

fn link(a: Side<'_>, b: Side<'_>) -> Option<Link> {
    if declared_distinct(a.tenant).any(|n| n == b.name)
        || declared_distinct(b.tenant).any(|n| n == a.name)
    {
        return Some(Link::Annotation);
    }
    // A subscription concerns both only when it is in both lists; searching one side suffices
    // and gives the same answer from either side.
    a.subscriptions
        .iter()
        .chain(b.subscriptions)
        .find(|s| s.concerns(a.name) && s.concerns(b.name))
        .map(|s| Link::SharedSubscription(s.metadata.name.clone().unwrap_or_default()))
}

/// How much a tenant looks used: users and settings first, then age, then the name, so the
/// answer is the same from either side of a pair.
fn usage_key(t: &Tenant) -> (bool, i64, usize, std::cmp::Reverse<Option<i64>>) {
    let settings = t
        .spec
        .services
        .iter()
        .filter(|s| !s.settings.is_empty())
        .count();
    let created = t
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|c| c.0.as_second());
    (
        t.spec.users > 0 && settings > 0,
        t.spec.users,
        settings,
        std::cmp::Reverse(created),
    )
}

/// The side of the pair that is the tenant in use (users and settings; else the older one;
/// else the first by name). Symmetric: `in_use(a, b)` and `in_use(b, a)` name the same tenant.
fn in_use<'a>(a: Side<'a>, b: Side<'a>) -> (Side<'a>, Side<'a>) {
    let (ka, kb) = (usage_key(a.tenant), usage_key(b.tenant));
    let a_wins = match ka.cmp(&kb) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => a.name < b.name,
    };
    if a_wins { (a, b) } else { (b, a) }
}

/// The latest end of the subscriptions for `product` that concern `side` and have not ended.
fn covered_until(
    side: Side<'_>,
    product: &str,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    side.subscriptions
        .iter()
        .filter(|s| s.spec.product == product && s.concerns(side.name))
        .filter_map(|s| Timeline::of(s, policy).ok())
        .map(|t| t.effective_end_at)
        .filter(|end| *end > now)
        .max()
}

/// What `unused` owns, has not ended, and would cover `used` longer than it is covered now.
fn moves(used: Side<'_>, unused: Side<'_>, policy: &Policy, now: DateTime<Utc>) -> Vec<Move> {
    let mut out: Vec<Move> = unused
        .subscriptions
        .iter()
        .filter(|s| s.spec.tenant_ref == unused.name)
        .filter_map(|s| {
            let end = Timeline::of(s, policy).ok()?.effective_end_at;
            let covered = covered_until(used, &s.spec.product, policy, now);
            (end > now && covered.is_none_or(|c| c < end)).then(|| Move {
                subscription: s.metadata.name.clone().unwrap_or_default(),
                product: s.spec.product.to_string(),
                from: unused.name.to_string(),
                effective_end_at: end,
            })
        })
        .collect();
    out.sort_by(|a, b| a.subscription.cmp(&b.subscription));
    out
}

/// `a, b and 2 more`, naming at most `max`.
fn listed(items: &[String], max: usize) -> String {
    let shown = items
        .iter()
        .take(max)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    match items.len().saturating_sub(max) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

fn message(this: &str, d: &Duplicate) -> String {
    let other = &d.other;
    let admins = listed(&d.shared_admins, MAX_ADDRESSES);
    let plural = if d.shared_admins.len() == 1 { "" } else { "es" };
    let mut m = format!(
        "Possible duplicate of tenant {other}: both list the administrator address{plural} {admins}. "
    );
    let this_in_use = d.in_use == this;
    let assumed = if this_in_use {
        "this tenant is the one in use".to_string()
    } else {
        format!("tenant {other} is the one in use")
    };
    let names: Vec<String> = d.moves.iter().map(|mv| mv.subscription.clone()).collect();
    let subs = listed(&names, MAX_MOVES);
    let s = if d.moves.len() == 1 { "" } else { "s" };
    let (target, unused) = if this_in_use {
        ("this tenant".to_string(), format!("tenant {other}"))
    } else {
        (format!("tenant {other}"), "this tenant".to_string())
    };
    let target_name = if this_in_use { this } else { other.as_str() };
    if d.moves.is_empty() {
        m.push_str(&format!(
            "Assuming {assumed} (users and settings decide), {unused} holds no subscription that the tenant in use lacks: delete {unused} once it owns nothing in force, if it is not used."
        ));
    } else {
        m.push_str(&format!(
            "Assuming {assumed} (users and settings decide): move subscription{s} {subs} to {target} (spec.tenantRef: {target_name}), then delete {unused} once it owns nothing in force."
        ));
    }
    m.push_str(&format!(
        " If both tenants are used on purpose, annotate this tenant {NOT_DUPLICATE_ANNOTATION}={other} (or tenant {other} with this tenant's name)."
    ));
    m
}

/// The possible duplicates of `tenant` among `neighbours`, sorted by the other tenant's name.
///
/// `subscriptions` are those that concern `tenant`. Neighbours that are `tenant` itself, that
/// share no address with it, or that are linked to it on purpose are left out.
pub fn possible_duplicates(
    tenant: &Tenant,
    subscriptions: &[&Subscription],
    neighbours: &[Neighbour<'_>],
    policy: &Policy,
    now: DateTime<Utc>,
) -> Vec<Duplicate> {
    let name = tenant.metadata.name.as_deref().unwrap_or_default();
    let this = Side {
        tenant,
        name,
        subscriptions,
    };
    let addresses = admin_addresses(tenant);
    let mut out: Vec<Duplicate> = Vec::new();
    for n in neighbours {
        let other_name = n.tenant.metadata.name.as_deref().unwrap_or_default();
        if other_name == name || out.iter().any(|d| d.other == other_name) {
            continue;
        }
        let other = Side {
            tenant: n.tenant,
            name: other_name,
            subscriptions: n.subscriptions,
        };
        let shared: Vec<String> = admin_addresses(n.tenant)
            .intersection(&addresses)
            .cloned()
            .collect();
        if shared.is_empty() || link(this, other).is_some() {
            continue;
        }
        let (used, unused) = in_use(this, other);
        let mut d = Duplicate {
            other: other_name.to_string(),
            shared_admins: shared,
            in_use: used.name.to_string(),
            moves: moves(used, unused, policy, now),
            message: String::new(),
        };
        d.message = message(name, &d);
        out.push(d);
    }
    out.sort_by(|a, b| a.other.cmp(&b.other));
    out
}

/// The next instant after `now` at which [`possible_duplicates`] answers differently by itself:
/// a subscription worth moving ends, or the tenant in use stops being covered by one of its own.
/// Only the ends of the pairs' subscriptions can change it, so those are tried in order.
pub fn next_change(
    tenant: &Tenant,
    subscriptions: &[&Subscription],
    neighbours: &[Neighbour<'_>],
    found: &[Duplicate],
    policy: &Policy,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if found.is_empty() {
        return None; // pairs come and go with specs, never with time
    }
    let mut candidates: Vec<DateTime<Utc>> = subscriptions
        .iter()
        .chain(neighbours.iter().flat_map(|n| n.subscriptions.iter()))
        .filter_map(|s| Timeline::of(s, policy).ok())
        .map(|t| t.effective_end_at)
        .filter(|t| *t > now)
        .collect();
    candidates.sort_unstable();
    candidates.dedup();
    let moves_at =
        |found: &[Duplicate]| -> Vec<Vec<Move>> { found.iter().map(|d| d.moves.clone()).collect() };
    let current = moves_at(found);
    candidates.into_iter().find(|t| {
        moves_at(&possible_duplicates(
            tenant,
            subscriptions,
            neighbours,
            policy,
            *t,
        )) != current
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{shared, subscription, tenant, with_admins};

    const ESG: &str = "email-safeguard";
    const ETI: &str = "email-threat-isolation";

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&format!("{s}T00:00:00Z"))
            .expect("test instant")
            .with_timezone(&Utc)
    }

    fn with_settings(mut t: Tenant) -> Tenant {
        if let Some(s) = t.spec.services.first_mut() {
            s.settings.insert("spamThreshold".into(), 5.into());
        }
        t
    }

    fn annotated(mut t: Tenant, value: &str) -> Tenant {
        t.metadata
            .annotations
            .get_or_insert_default()
            .insert(NOT_DUPLICATE_ANNOTATION.into(), value.into());
        t
    }

    /// Both sides of a pair, as each tenant sees the other.
    fn pair(
        a: &Tenant,
        b: &Tenant,
        subs: &[Subscription],
        now: &str,
    ) -> (Vec<Duplicate>, Vec<Duplicate>) {
        let policy = Policy::default();
        let of = |t: &Tenant| -> Vec<&Subscription> {
            let n = t.metadata.name.as_deref().unwrap_or_default();
            subs.iter().filter(|s| s.concerns(n)).collect()
        };
        let (sa, sb) = (of(a), of(b));
        let now = at(now);
        (
            possible_duplicates(
                a,
                &sa,
                &[Neighbour {
                    tenant: b,
                    subscriptions: &sb,
                }],
                &policy,
                now,
            ),
            possible_duplicates(
                b,
                &sb,
                &[Neighbour {
                    tenant: a,
                    subscriptions: &sa,
                }],
                &policy,
                now,
            ),
        )
    }

    /// The late renewal: the contract on the new tenant, the tenant in use lapsing.
    fn late_renewal() -> (Tenant, Tenant, Vec<Subscription>) {
        let used = with_admins(
            with_settings(tenant("soylent", &[ESG], 80)),
            &["admin@soylent.example"],
        );
        let unused = with_admins(tenant("soylent-new", &[], 0), &["Admin@Soylent.Example"]);
        let subs = vec![
            subscription("esg-2025", "soylent", ESG, "2025-11-15", "2026-11-14", 100),
            subscription(
                "esg-2026",
                "soylent-new",
                ESG,
                "2026-11-15",
                "2027-11-14",
                100,
            ),
        ];
        (used, unused, subs)
    }

    #[test]
    fn a_late_renewal_is_found_on_both_tenants_with_the_move_to_make() {
        let (used, unused, subs) = late_renewal();
        let (on_used, on_unused) = pair(&used, &unused, &subs, "2026-11-29");
        assert_eq!(on_used.len(), 1);
        assert_eq!(on_unused.len(), 1);
        let (u, n) = (&on_used[0], &on_unused[0]);
        assert_eq!(u.other, "soylent-new");
        assert_eq!(n.other, "soylent");
        assert_eq!(u.shared_admins, ["admin@soylent.example"], "case folded");
        assert_eq!(
            (u.in_use.as_str(), n.in_use.as_str()),
            ("soylent", "soylent")
        );
        let moved: Vec<&str> = u.moves.iter().map(|m| m.subscription.as_str()).collect();
        assert_eq!(moved, ["esg-2026"]);
        assert_eq!(u.moves, n.moves, "the same move from either side");
        assert_eq!(
            u.message,
            "Possible duplicate of tenant soylent-new: both list the administrator address admin@soylent.example. \
             Assuming this tenant is the one in use (users and settings decide): move subscription esg-2026 to this tenant \
             (spec.tenantRef: soylent), then delete tenant soylent-new once it owns nothing in force. \
             If both tenants are used on purpose, annotate this tenant mailsec.io/not-duplicate-of=soylent-new (or tenant soylent-new with this tenant's name)."
        );
        assert_eq!(
            n.message,
            "Possible duplicate of tenant soylent: both list the administrator address admin@soylent.example. \
             Assuming tenant soylent is the one in use (users and settings decide): move subscription esg-2026 to tenant soylent \
             (spec.tenantRef: soylent), then delete this tenant once it owns nothing in force. \
             If both tenants are used on purpose, annotate this tenant mailsec.io/not-duplicate-of=soylent (or tenant soylent with this tenant's name)."
        );
    }

    #[test]
    fn after_the_transfer_the_hint_says_to_delete_the_unused_tenant() {
        let (used, unused, mut subs) = late_renewal();
        subs[1].spec.tenant_ref = "soylent".into();
        let (on_used, on_unused) = pair(&used, &unused, &subs, "2026-11-29");
        assert!(on_used[0].moves.is_empty());
        assert!(on_unused[0].moves.is_empty());
        assert!(
            on_used[0]
                .message
                .contains("tenant soylent-new holds no subscription that the tenant in use lacks: delete tenant soylent-new once it owns nothing in force"),
            "{}",
            on_used[0].message
        );
        assert!(on_unused[0].message.contains("delete this tenant"));
    }

    #[test]
    fn a_renewal_waiting_on_the_other_tenant_is_found_before_the_old_one_ends() {
        // The old subscription is still in force, the renewal (not started) on the new tenant
        // would cover longer: move it now, before the tenant in use lapses.
        let (used, unused, subs) = late_renewal();
        let (on_used, _) = pair(&used, &unused, &subs, "2026-11-01");
        assert_eq!(on_used[0].moves.len(), 1);
        // Once it has ended it is not worth moving.
        let (on_used, _) = pair(&used, &unused, &subs, "2027-11-15");
        assert!(on_used[0].moves.is_empty());
    }

    #[test]
    fn what_clears_a_pair() {
        let (used, unused, subs) = late_renewal();
        // The annotation, on either tenant, naming the other (in a list).
        for (a, b) in [
            (annotated(used.clone(), "x, soylent-new"), unused.clone()),
            (used.clone(), annotated(unused.clone(), "soylent")),
        ] {
            let (x, y) = pair(&a, &b, &subs, "2026-11-29");
            assert!(x.is_empty() && y.is_empty());
        }
        // An annotation naming somebody else does not.
        let (x, _) = pair(
            &annotated(used.clone(), "soylent-old"),
            &unused,
            &subs,
            "2026-11-29",
        );
        assert_eq!(x.len(), 1);
        // A subscription shared between them: the merger case (even an expired one).
        let mut merged = subs.clone();
        merged.push(shared(
            subscription("merger", "soylent", ETI, "2020-01-01", "2020-12-31", 10),
            &["soylent-new"],
        ));
        let (x, y) = pair(&used, &unused, &merged, "2026-11-29");
        assert!(x.is_empty() && y.is_empty());
        // Different addresses: never a pair.
        let other = with_admins(unused.clone(), &["someone@else.example"]);
        let (x, y) = pair(&used, &other, &subs, "2026-11-29");
        assert!(x.is_empty() && y.is_empty());
    }

    #[test]
    fn the_tenant_in_use_is_the_same_from_both_sides() {
        let a = with_admins(tenant("a", &[ESG], 0), &["x@example.com"]);
        let b = with_admins(tenant("b", &[ESG], 0), &["x@example.com"]);
        let cases: [(Tenant, Tenant, &str); 4] = [
            (a.clone(), b.clone(), "a"), // a tie: by name
            (
                a.clone(),
                with_settings({
                    let mut b = b.clone();
                    b.spec.users = 3;
                    b
                }),
                "b",
            ),
            (
                {
                    let mut a = a.clone();
                    a.spec.users = 10;
                    a
                },
                {
                    let mut b = b.clone();
                    b.spec.users = 3;
                    b
                },
                "a",
            ),
            (a.clone(), with_settings(b.clone()), "b"),
        ];
        for (a, b, expected) in cases {
            let (x, y) = pair(&a, &b, &[], "2026-11-29");
            assert_eq!(x[0].in_use, expected);
            assert_eq!(y[0].in_use, expected);
        }
    }

    #[test]
    fn the_index_key_is_the_lower_case_address() {
        let t = with_admins(
            tenant("t", &[], 0),
            &[" A@Example.COM", "a@example.com", "b@example.com"],
        );
        let keys: Vec<String> = admin_addresses(&t).into_iter().collect();
        assert_eq!(keys, ["a@example.com", "b@example.com"]);
    }

    #[test]
    fn long_lists_are_cut_and_counted() {
        let many: Vec<String> = (0..6).map(|i| format!("a{i}@x.example")).collect();
        assert_eq!(
            listed(&many, MAX_ADDRESSES),
            "a0@x.example, a1@x.example, a2@x.example, a3@x.example and 2 more"
        );
    }
}
