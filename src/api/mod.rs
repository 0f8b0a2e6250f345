//! The API types: `Tenant` and `Subscription` (`mailsec.io/v1alpha1`, cluster-scoped).
//! Their doc comments are what `kubectl explain` shows.

pub mod bounds;
pub mod cel;
pub mod condition;
pub mod date;
pub mod names;
pub mod subscription;
pub mod tenant;

pub use condition::{Condition, ConditionStatus};
pub use date::LicenseDate;
pub use names::{NamespaceName, TenantName};
pub use subscription::{
    Extension, Plan, Subscription, SubscriptionPhase, SubscriptionSpec, SubscriptionStatus,
    Transfer,
};
pub use tenant::{
    Admin, Locale, MilestoneRecord, NotificationChannel, NotificationRecord, NotificationState,
    PossibleDuplicate, ServicePhase, ServiceSpec, ServiceStatus, Tenant, TenantPhase, TenantSpec,
    TenantStatus,
};

/// The API group of both resources.
pub const GROUP: &str = "mailsec.io";

/// The CRDs as one multi-document YAML stream, as `mailsec-operator crd` prints it and `crds/` holds it.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    let mut out = String::new();
    for crd in [Tenant::crd(), Subscription::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}
