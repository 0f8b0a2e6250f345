//! Which watch events each consumer needs to hear of.
//!
//! Every write the operator makes comes back through its own watch. Left alone, each status it
//! writes triggers a reconcile of the object (which then finds nothing to do) and of everything
//! mapped from it: a cold start of 10,000 tenants and 20,000 subscriptions ran 80,000
//! reconciles for 30,000 statuses. A consumer hears of a change only when something it reads
//! changed: the spec (`generation`), the metadata the engine reads, or the part of the status
//! it reads; and an object hears of its own status only when someone else wrote it.
//!
//! New objects (`before` is `None`: first list, re-list, creation) and deletions always count.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::{Arc, Mutex};

use kube::Resource;

use crate::api::{PossibleDuplicate, Subscription, Tenant, Transfer};

/// The resourceVersion of the last status this process wrote, per object: the watch event
/// carrying that version is this process's own write coming back (its echo).
///
/// Keyed by a hash of kind and name, and resourceVersions kept as numbers (as etcd makes them),
/// so that a fleet of 100,000 objects costs a few MiB at most. A resourceVersion that is not a
/// number (another storage) is recorded as written but never recognised as an echo: those
/// events then simply trigger a reconcile, as before.
#[derive(Clone, Debug, Default)]
pub struct OwnWrites(Arc<Mutex<HashMap<u64, u64>>>);

/// Recorded for a write whose resourceVersion is unknown or not a number.
const UNKNOWN_VERSION: u64 = u64::MAX;

impl OwnWrites {
    fn key<K: Resource<DynamicType = ()>>(name: &str) -> u64 {
        BuildHasherDefault::<DefaultHasher>::default().hash_one((K::kind(&()), name))
    }

    /// Notes that this process wrote the status of `name`, which the API server stored as
    /// `resource_version`.
    pub fn record<K: Resource<DynamicType = ()>>(
        &self,
        name: &str,
        resource_version: Option<&str>,
    ) {
        let version = resource_version
            .and_then(|v| v.parse().ok())
            .unwrap_or(UNKNOWN_VERSION);
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(Self::key::<K>(name), version);
    }

    /// Whether this process has written the status of `name` (its cached copy may then be older
    /// than that write).
    pub fn wrote<K: Resource<DynamicType = ()>>(&self, name: &str) -> bool {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.contains_key(&Self::key::<K>(name))
    }

    /// Whether `obj` is older than the version this process's last status write of it made
    /// (a cached copy the watch has not brought that write to yet).
    pub fn is_behind<K: Resource<DynamicType = ()>>(&self, obj: &K) -> bool {
        self.versions(obj)
            .is_some_and(|(written, version)| written != UNKNOWN_VERSION && version < written)
    }

    /// Whether `obj` is the version this process's last status write of it made.
    pub fn is_echo<K: Resource<DynamicType = ()>>(&self, obj: &K) -> bool {
        self.versions(obj)
            .is_some_and(|(written, version)| written == version)
    }

    /// The version this process's last status write of `obj` made, and `obj`'s own; None when
    /// it wrote none, or `obj`'s version is not a number.
    fn versions<K: Resource<DynamicType = ()>>(&self, obj: &K) -> Option<(u64, u64)> {
        let name = obj.meta().name.as_deref()?;
        let version = obj
            .meta()
            .resource_version
            .as_deref()?
            .parse::<u64>()
            .ok()?;
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&Self::key::<K>(name))
            .map(|written| (*written, version))
    }
}

/// The metadata a controller reads changed: the spec (`generation`), labels, annotations,
/// finalizers or the deletion.
pub fn metadata_changed<K: Resource>(before: &K, after: &K) -> bool {
    let (b, a) = (before.meta(), after.meta());
    b.generation != a.generation
        || b.labels != a.labels
        || b.annotations != a.annotations
        || b.finalizers != a.finalizers
        || b.deletion_timestamp != a.deletion_timestamp
}

/// For the tenant controller, about the tenant itself: its spec or metadata changed, or its
/// status was changed by someone else (the notifier's outbox aside, which it does not read).
pub fn tenant_for_itself(own: OwnWrites) -> impl Fn(Option<&Tenant>, &Tenant) -> bool {
    move |before, after| {
        let Some(before) = before else { return true };
        metadata_changed(before, after) || (!verdict_equal(before, after) && !own.is_echo(after))
    }
}

/// The tenant's status apart from the notifier's outbox.
fn verdict_equal(before: &Tenant, after: &Tenant) -> bool {
    match (&before.status, &after.status) {
        (Some(b), Some(a)) => b.same_verdict(a),
        (b, a) => b.is_none() && a.is_none(),
    }
}

/// For the tenant controller, about the tenants a tenant's change concerns (those sharing its
/// subscriptions or its administrators): its spec or metadata, or the possible duplicates its
/// status lists.
pub fn tenant_for_cotenants(before: Option<&Tenant>, after: &Tenant) -> bool {
    let Some(before) = before else { return true };
    fn pairs(t: &Tenant) -> &[PossibleDuplicate] {
        t.status
            .as_ref()
            .map_or(&[], |s| s.possible_duplicates.as_slice())
    }
    metadata_changed(before, after) || pairs(before) != pairs(after)
}

/// For the subscription controller, about a tenant: its existence and spec (users).
pub fn tenant_for_subscriptions(before: Option<&Tenant>, after: &Tenant) -> bool {
    before.is_none_or(|before| metadata_changed(before, after))
}

/// For the subscription controller, about the subscription itself: its spec or metadata
/// changed, or its status was changed by someone else.
pub fn subscription_for_itself(
    own: OwnWrites,
) -> impl Fn(Option<&Subscription>, &Subscription) -> bool {
    move |before, after| {
        let Some(before) = before else { return true };
        metadata_changed(before, after) || (before.status != after.status && !own.is_echo(after))
    }
}

/// For the tenant controller, about a subscription: its spec or metadata, or the part of its
/// status a tenant's evaluation reads (the tenants it was last seen with, and its transfers).
pub fn subscription_for_tenants(before: Option<&Subscription>, after: &Subscription) -> bool {
    let Some(before) = before else { return true };
    // Borrowed: this runs on every watch event of every subscription.
    fn named(s: &Subscription) -> Vec<&str> {
        let mut names: Vec<&str> = crate::engine::subscription::tenants_named(s).collect();
        names.sort_unstable();
        names.dedup();
        names
    }
    fn transfers(s: &Subscription) -> Option<&[Transfer]> {
        s.status.as_ref().map(|st| st.transfers.as_slice())
    }
    metadata_changed(before, after)
        || named(before) != named(after)
        || transfers(before) != transfers(after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{SubscriptionStatus, TenantStatus};
    use crate::fixtures::{subscription, tenant};

    fn with_version<K: Resource>(mut obj: K, version: &str) -> K {
        obj.meta_mut().resource_version = Some(version.into());
        obj
    }

    fn tenant_with(status: TenantStatus, version: &str) -> Tenant {
        let mut t = with_version(tenant("acme", &["esg"], 10), version);
        t.status = Some(status);
        t
    }

    #[test]
    fn an_echo_of_the_own_status_write_is_not_heard_a_foreign_one_is() {
        let own = OwnWrites::default();
        let relevant = tenant_for_itself(own.clone());
        let before = tenant_with(TenantStatus::default(), "10");
        let written = TenantStatus {
            observed_generation: Some(1),
            ..Default::default()
        };
        let after = tenant_with(written.clone(), "11");
        assert!(
            relevant(Some(&before), &after),
            "not recorded: someone else's"
        );
        own.record::<Tenant>("acme", Some("11"));
        assert!(own.wrote::<Tenant>("acme"));
        assert!(!relevant(Some(&before), &after), "the own write's echo");
        let foreign = tenant_with(written, "12");
        assert!(
            relevant(Some(&before), &foreign),
            "a later version with that status is someone else's"
        );
        assert!(relevant(None, &after), "a listed object always counts");
    }

    #[test]
    fn a_cached_copy_older_than_the_own_write_is_behind() {
        let own = OwnWrites::default();
        let cached = tenant_with(TenantStatus::default(), "10");
        assert!(!own.is_behind(&cached), "never written: not behind");
        own.record::<Tenant>("acme", Some("11"));
        assert!(own.is_behind(&cached));
        assert!(
            !own.is_behind(&with_version(cached.clone(), "11")),
            "the echo"
        );
        assert!(!own.is_behind(&with_version(cached.clone(), "12")), "later");
        own.record::<Tenant>("acme", Some("not-a-number"));
        assert!(!own.is_behind(&cached), "an unknown version: never behind");
    }

    #[test]
    fn the_outbox_alone_does_not_concern_the_tenant_controller() {
        let relevant = tenant_for_itself(OwnWrites::default());
        let before = tenant_with(TenantStatus::default(), "10");
        let mut status = TenantStatus::default();
        let entry = serde_json::json!({
            "id": "ReadOnly/esg/2027-01-01T00:00:00Z/Email/it@acme.example",
            "milestone": "ReadOnly/esg/2027-01-01T00:00:00Z",
            "channel": "Email",
            "recipient": "it@acme.example",
            "state": "Delivered",
        });
        status
            .notifications
            .push(serde_json::from_value(entry).expect("an outbox entry"));
        let after = tenant_with(status, "11");
        assert!(!relevant(Some(&before), &after));
    }

    #[test]
    fn spec_labels_annotations_and_deletion_count_for_every_consumer() {
        let before = with_version(tenant("acme", &["esg"], 10), "10");
        let mut changes: Vec<Tenant> = Vec::new();
        let mut t = before.clone();
        t.metadata.generation = Some(2);
        changes.push(t);
        let mut t = before.clone();
        t.metadata.annotations = Some([("mailsec.io/not-duplicate-of".into(), "x".into())].into());
        changes.push(t);
        let mut t = before.clone();
        t.metadata.labels = Some([("team".into(), "a".into())].into());
        changes.push(t);
        let mut t = before.clone();
        t.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        changes.push(t);
        let own = tenant_for_itself(OwnWrites::default());
        for after in &changes {
            assert!(own(Some(&before), after));
            assert!(tenant_for_cotenants(Some(&before), after));
            assert!(tenant_for_subscriptions(Some(&before), after));
        }
        let same = with_version(before.clone(), "11");
        assert!(!tenant_for_subscriptions(Some(&before), &same));
        assert!(!tenant_for_cotenants(Some(&before), &same));
    }

    #[test]
    fn cotenants_hear_of_a_changed_pairing() {
        let before = tenant_with(TenantStatus::default(), "10");
        let after = tenant_with(
            TenantStatus {
                possible_duplicates: vec![PossibleDuplicate {
                    tenant: "acme-2".into(),
                    shared_admins: vec!["it@acme.example".into()],
                    tenant_in_use: "acme".into(),
                    subscriptions_to_move: Vec::new(),
                }],
                ..Default::default()
            },
            "11",
        );
        assert!(tenant_for_cotenants(Some(&before), &after));
        let phase_only = tenant_with(
            TenantStatus {
                phase: Some(crate::api::TenantPhase::ReadOnly),
                ..Default::default()
            },
            "11",
        );
        assert!(!tenant_for_cotenants(Some(&before), &phase_only));
        assert!(!tenant_for_subscriptions(Some(&before), &phase_only));
    }

    fn sub_with(status: SubscriptionStatus, version: &str) -> Subscription {
        let mut s = with_version(
            subscription("s1", "acme", "esg", "2026-01-01", "2027-01-01", 10),
            version,
        );
        s.status = Some(status);
        s
    }

    #[test]
    fn tenants_hear_of_a_subscription_status_only_when_it_names_or_transfers_differently() {
        let before = sub_with(SubscriptionStatus::default(), "10");
        let first_write = sub_with(
            SubscriptionStatus {
                tenant: Some("acme".into()),
                phase: Some(crate::api::SubscriptionPhase::Active),
                ..Default::default()
            },
            "11",
        );
        assert!(
            !subscription_for_tenants(Some(&before), &first_write),
            "the owner was already named by the spec"
        );
        let moved = sub_with(
            SubscriptionStatus {
                tenant: Some("other".into()),
                ..Default::default()
            },
            "12",
        );
        assert!(subscription_for_tenants(Some(&first_write), &moved));
        let transferred = sub_with(
            SubscriptionStatus {
                tenant: Some("acme".into()),
                phase: Some(crate::api::SubscriptionPhase::Active),
                transfers: vec![Transfer {
                    from: "other".into(),
                    to: "acme".into(),
                    at: chrono::Utc::now(),
                }],
                ..Default::default()
            },
            "13",
        );
        assert!(subscription_for_tenants(Some(&first_write), &transferred));
        assert!(subscription_for_tenants(None, &first_write));
    }

    #[test]
    fn a_subscription_hears_of_its_status_only_when_someone_else_wrote_it() {
        let own = OwnWrites::default();
        let relevant = subscription_for_itself(own.clone());
        let before = sub_with(SubscriptionStatus::default(), "10");
        let after = sub_with(
            SubscriptionStatus {
                tenant: Some("acme".into()),
                ..Default::default()
            },
            "11",
        );
        assert!(relevant(Some(&before), &after));
        own.record::<Subscription>("s1", Some("11"));
        assert!(!relevant(Some(&before), &after));
        assert!(
            !own.is_echo(&with_version(tenant("s1", &[], 1), "11")),
            "kinds are told apart"
        );
    }

    #[test]
    fn versions_that_are_not_numbers_are_never_taken_for_echoes() {
        let own = OwnWrites::default();
        own.record::<Tenant>("acme", Some("abc"));
        assert!(own.wrote::<Tenant>("acme"));
        assert!(!own.is_echo(&with_version(tenant("acme", &[], 1), "abc")));
    }
}
