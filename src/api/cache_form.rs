//! The form objects take in the operator's caches. A condition's message is the largest part of
//! a cached Tenant or Subscription (a Tenant's `Warning` message lists every cause), and the
//! operator never reads a cached message (nor a Tenant's `status.licencesHeld`): it only
//! compares what it computes with what is stored, to write nothing when nothing changed. In the
//! caches the messages of a status (and the licences held) are replaced by one digest of them
//! all, held by its first condition (the others' are left empty: a digest each took an
//! allocation each, 3.5 MB at 30,000 objects), and comparisons go through
//! [`CacheForm::same_as_cached`].

use std::borrow::Cow;
use std::hash::{Hash, Hasher};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};

use super::{
    Condition, DEFAULT_CATALOGUE, MilestoneKind, Subscription, SubscriptionStatus, Tenant,
    TenantStatus, Word,
};

/// What a cached message starts with.
const DIGEST_PREFIX: &str = "digest:";

/// An object, or a status, as the operator's caches hold it.
pub trait CacheForm {
    /// Turns `self` into its cache form (nothing, for most kinds).
    fn to_cache_form(&mut self) {}

    /// Whether `cached` (in its cache form, or as stored) says the same as `self`.
    fn same_as_cached(&self, cached: &Self) -> bool
    where
        Self: PartialEq + Clone,
    {
        if self == cached {
            return true;
        }
        let mut compact = self.clone();
        compact.to_cache_form();
        compact == *cached
    }
}

/// A product id as a [`Word`]: an id of the default catalogue is shared, others are owned.
pub fn product_word(product: &str) -> Word {
    known_product(product).map_or_else(|| Cow::Owned(product.to_string()), Cow::Borrowed)
}

/// `word` as the static word `known` finds for it, if any.
fn share(word: &mut Word, known: impl Fn(&str) -> Option<&'static str>) {
    if let Cow::Owned(owned) = word
        && let Some(shared) = known(owned)
    {
        *word = Cow::Borrowed(shared);
    }
}

fn known_product(product: &str) -> Option<&'static str> {
    DEFAULT_CATALOGUE.into_iter().find(|p| *p == product)
}

/// Messages replaced by one digest of them all, and of what `also` takes out of the status (64
/// bits: a collision would only skip the write of a status whose every other field is
/// unchanged); types and reasons the operator writes shared as static words instead of a copy in
/// every object. With no message to hold the digest, `also` is not called.
fn compact_conditions(
    conditions: &mut [Condition],
    also: impl FnOnce(&mut std::hash::DefaultHasher),
) {
    for c in conditions.iter_mut() {
        share(&mut c.type_, super::condition::known_word);
        share(&mut c.reason, super::condition::known_word);
    }
    let Some((first, rest)) = conditions.split_first_mut() else {
        return;
    };
    let compact =
        first.message.starts_with(DIGEST_PREFIX) && rest.iter().all(|c| c.message.is_empty());
    if compact || (first.message.is_empty() && rest.iter().all(|c| c.message.is_empty())) {
        return;
    }
    let mut hasher = std::hash::DefaultHasher::new();
    first.message.hash(&mut hasher);
    for c in rest.iter_mut() {
        std::mem::take(&mut c.message).hash(&mut hasher);
    }
    also(&mut hasher);
    first.message = format!("{DIGEST_PREFIX}{:016x}", hasher.finish());
}

impl CacheForm for TenantStatus {
    /// `licencesHeld` goes into the digest too: the operator computes it, and reads only the
    /// list it computed (the API server's admission reads the stored one).
    fn to_cache_form(&mut self) {
        for service in &mut self.services {
            share(&mut service.product, known_product);
        }
        for record in &mut self.milestones {
            share(&mut record.kind, |k| {
                MilestoneKind::parse(k).map(MilestoneKind::as_str)
            });
            if let Some(product) = &mut record.product {
                share(product, known_product);
            }
        }
        let held = &mut self.licences_held;
        compact_conditions(&mut self.conditions, |hasher| {
            std::mem::take(held).hash(hasher)
        });
    }
}

impl CacheForm for SubscriptionStatus {
    fn to_cache_form(&mut self) {
        compact_conditions(&mut self.conditions, |_| {});
    }
}

impl CacheForm for Tenant {
    fn to_cache_form(&mut self) {
        for service in &mut self.spec.services {
            share(&mut service.product, known_product);
        }
        if let Some(status) = &mut self.status {
            status.to_cache_form();
        }
    }
}

impl CacheForm for Subscription {
    fn to_cache_form(&mut self) {
        share(&mut self.spec.product, known_product);
        if let Some(status) = &mut self.status {
            status.to_cache_form();
        }
    }
}

impl CacheForm for Deployment {}
impl CacheForm for StatefulSet {}
impl CacheForm for ConfigMap {}
impl CacheForm for Namespace {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ConditionStatus, TenantPhase};

    fn status(message: &str) -> TenantStatus {
        TenantStatus {
            phase: Some(TenantPhase::Warning),
            conditions: vec![Condition {
                type_: "Warning".into(),
                status: ConditionStatus::True,
                reason: "SubscriptionExpiringSoon".into(),
                message: message.into(),
                last_transition_time: "2026-11-30T00:00:00Z".parse().expect("instant"),
                observed_generation: Some(1),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_cached_status_keeps_everything_but_the_messages_text() {
        let stored = status("email-safeguard: subscription acme-esg ends on 30 Dec 2026");
        let mut cached = stored.clone();
        cached.to_cache_form();
        assert_ne!(cached, stored);
        assert!(cached.conditions[0].message.starts_with(DIGEST_PREFIX));
        assert_eq!(cached.conditions[0].reason, stored.conditions[0].reason);
        let again = {
            let mut c = cached.clone();
            c.to_cache_form();
            c
        };
        assert_eq!(again, cached, "the cache form of a cache form is itself");
    }

    /// One digest stands for every message of a status: a change in any of them changes it.
    #[test]
    fn one_digest_stands_for_every_message() {
        let two = |second: &str| {
            let mut s = status("email-safeguard: subscription acme-esg ends on 30 Dec 2026");
            let mut other = s.conditions[0].clone();
            other.type_ = "Ready".into();
            other.message = second.into();
            s.conditions.push(other);
            s
        };
        let mut cached = two("Tenant is Warning");
        cached.to_cache_form();
        assert!(cached.conditions[0].message.starts_with(DIGEST_PREFIX));
        assert_eq!(cached.conditions[1].message, "", "no digest of its own");
        assert!(two("Tenant is Warning").same_as_cached(&cached));
        assert!(!two("Tenant is Active").same_as_cached(&cached));
        let mut swapped = two("Tenant is Warning");
        let first = std::mem::take(&mut swapped.conditions[0].message);
        swapped.conditions[0].message =
            std::mem::replace(&mut swapped.conditions[1].message, first);
        assert!(
            !swapped.same_as_cached(&cached),
            "the same messages on other conditions"
        );
    }

    /// The licences held are compared through the digest, and kept where there is no message
    /// to hold it.
    #[test]
    fn the_licences_held_are_part_of_the_digest() {
        let held = |names: &[&str]| {
            let mut s = status("email-safeguard: subscription acme-esg ends on 30 Dec 2026");
            s.licences_held = names.iter().map(|n| n.to_string()).collect();
            s
        };
        let mut cached = held(&["acme-esg", "acme-etdr"]);
        cached.to_cache_form();
        assert!(cached.licences_held.is_empty());
        assert!(held(&["acme-esg", "acme-etdr"]).same_as_cached(&cached));
        assert!(!held(&["acme-esg"]).same_as_cached(&cached));
        assert!(!held(&["acme-etdr", "acme-esg"]).same_as_cached(&cached));
        assert!(!held(&[]).same_as_cached(&cached));
        let again = {
            let mut c = cached.clone();
            c.to_cache_form();
            c
        };
        assert_eq!(again, cached, "the cache form of a cache form is itself");
        let mut silent = held(&["acme-esg"]);
        silent.conditions[0].message.clear();
        let stored = silent.clone();
        silent.to_cache_form();
        assert_eq!(silent, stored, "no digest to hold the licences: kept");
    }

    #[test]
    fn types_and_reasons_read_from_the_api_server_share_the_static_words() {
        let read: TenantStatus = serde_json::from_value(serde_json::json!({
            "conditions": [
                {"type": "Warning", "status": "True", "reason": "ExpiringSoon",
                 "lastTransitionTime": "2026-11-30T00:00:00Z"},
                {"type": "Custom", "status": "True", "reason": "SomeoneElses",
                 "lastTransitionTime": "2026-11-30T00:00:00Z"},
            ]
        }))
        .expect("a status");
        assert!(matches!(read.conditions[0].reason, Cow::Owned(_)));
        let mut cached = read.clone();
        cached.to_cache_form();
        assert_eq!(cached, read, "the same words");
        assert!(matches!(
            cached.conditions[0].type_,
            Cow::Borrowed("Warning")
        ));
        assert!(matches!(
            cached.conditions[0].reason,
            Cow::Borrowed("ExpiringSoon")
        ));
        assert!(
            matches!(cached.conditions[1].reason, Cow::Owned(_)),
            "a word the operator does not write stays as read"
        );
    }

    #[test]
    fn product_ids_and_milestone_kinds_share_the_static_words() {
        let tenant: Tenant = serde_json::from_value(serde_json::json!({
            "apiVersion": "mailsec.io/v1alpha1", "kind": "Tenant", "metadata": {"name": "acme"},
            "spec": {"users": 1, "services": [{"product": "email-safeguard"}, {"product": "in-house-filter"}]},
            "status": {
                "services": [{"product": "email-threat-isolation", "phase": "Active"}],
                "milestones": [{"id": "ReadOnly/email-safeguard/2027-01-01T00:00:00Z",
                    "kind": "ReadOnly", "product": "email-safeguard",
                    "dueAt": "2027-01-01T00:00:00Z", "announcedAt": "2027-01-01T00:00:00Z"}],
            },
        }))
        .expect("a tenant");
        let mut cached = tenant.clone();
        cached.to_cache_form();
        assert_eq!(cached.spec, tenant.spec, "the same words");
        assert_eq!(cached.status, tenant.status, "the same words");
        let status = cached.status.as_ref().expect("status");
        assert!(matches!(cached.spec.services[0].product, Cow::Borrowed(_)));
        assert!(
            matches!(cached.spec.services[1].product, Cow::Owned(_)),
            "an id outside the default catalogue stays as read"
        );
        assert!(matches!(status.services[0].product, Cow::Borrowed(_)));
        assert!(matches!(
            status.milestones[0].kind,
            Cow::Borrowed("ReadOnly")
        ));
        assert!(matches!(
            status.milestones[0].product,
            Some(Cow::Borrowed("email-safeguard"))
        ));
        let sub: Subscription = serde_json::from_value(serde_json::json!({
            "apiVersion": "mailsec.io/v1alpha1", "kind": "Subscription", "metadata": {"name": "acme-esg"},
            "spec": {"tenantRef": "acme", "product": "email-safeguard", "startDate": "2026-01-01",
                     "endDate": "2026-12-31", "seats": 5},
        }))
        .expect("a subscription");
        let mut cached = sub.clone();
        cached.to_cache_form();
        assert_eq!(cached.spec, sub.spec);
        assert!(matches!(cached.spec.product, Cow::Borrowed(_)));
        assert!(matches!(product_word("email-safeguard"), Cow::Borrowed(_)));
        assert!(matches!(product_word("in-house-filter"), Cow::Owned(_)));
    }

    #[test]
    fn a_computed_status_is_compared_with_the_cached_or_the_stored_one() {
        let computed = status("email-safeguard: subscription acme-esg ends on 30 Dec 2026");
        let mut cached = computed.clone();
        cached.to_cache_form();
        assert!(computed.same_as_cached(&cached));
        assert!(
            computed.same_as_cached(&computed),
            "a status not in cache form"
        );
        let changed = status("email-safeguard: subscription acme-esg ends on 31 Dec 2026");
        assert!(!changed.same_as_cached(&cached), "only the message changed");
        let mut other_time = computed.clone();
        other_time.conditions[0].last_transition_time =
            "2026-12-01T00:00:00Z".parse().expect("instant");
        assert!(!other_time.same_as_cached(&cached));
        assert!(
            status("").same_as_cached(&{
                let mut c = status("");
                c.to_cache_form();
                c
            }),
            "an empty message stays empty"
        );
    }
}
