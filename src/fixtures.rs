//! Small constructors for Tenants and Subscriptions, used by tests, property tests and benchmarks
//! (and handy for anyone scripting against the library, with the `test-support` feature: the
//! released binary leaves them out).

use std::collections::BTreeMap;

use kube::api::ObjectMeta;

use crate::api::{
    Admin, Extension, LicenseDate, Locale, Plan, ServicePhase, ServiceSpec, ServiceStatus,
    Subscription, SubscriptionSpec, Tenant, TenantPhase, TenantSpec, TenantStatus,
};

/// Product names of the catalogue, as the tests and benchmarks spell them.
pub const ESG: &str = "email-safeguard";
pub const ETI: &str = "email-threat-isolation";
pub const ETDR: &str = "email-threat-detection-response";

/// A tenant using `products` (with empty settings) and `users` users, with one admin.
pub fn tenant(name: &str, products: &[&str], users: i64) -> Tenant {
    let mut t = Tenant::new(
        name,
        TenantSpec {
            display_name: None,
            services: products
                .iter()
                .map(|p| ServiceSpec {
                    product: p.to_string().into(),
                    settings: BTreeMap::new(),
                })
                .collect(),
            users,
            admins: vec![Admin {
                email: format!("admin@{name}.example"),
                name: None,
            }],
            locale: Locale::En,
            workload_namespaces: Vec::new(),
        },
    );
    t.metadata.generation = Some(1);
    t
}

/// The same tenant, with these administrator addresses instead of its own.
pub fn with_admins(mut t: Tenant, admins: &[&str]) -> Tenant {
    t.spec.admins = admins
        .iter()
        .map(|a| Admin {
            email: a.to_string(),
            name: None,
        })
        .collect();
    t
}

/// A tenant status in `phase` whose `services` are in the phases given, with no dates; the first
/// service listed is the base product.
pub fn tenant_status(phase: TenantPhase, services: &[(&str, ServicePhase)]) -> TenantStatus {
    TenantStatus {
        phase: Some(phase),
        services: services
            .iter()
            .enumerate()
            .map(|(i, (product, service_phase))| ServiceStatus {
                product: product.to_string().into(),
                base: i == 0,
                phase: *service_phase,
                subscription: None,
                plan: None,
                effective_end_at: None,
                expiring_soon_at: None,
                read_only_since: None,
                suspends_at: None,
                missing_since: None,
            })
            .collect(),
        ..Default::default()
    }
}

/// A paid subscription of `tenant` for `product` from `start` to `end` (dates as in the spec).
pub fn subscription(
    name: &str,
    tenant: &str,
    product: &str,
    start: &str,
    end: &str,
    seats: i64,
) -> Subscription {
    Subscription {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            generation: Some(1),
            ..Default::default()
        },
        spec: SubscriptionSpec {
            tenant_ref: tenant.to_string(),
            product: product.to_string().into(),
            plan: Plan::Paid,
            start_date: LicenseDate::from(start),
            end_date: LicenseDate::from(end),
            seats,
            shared_with: Vec::new(),
            extension: None,
        },
        status: None,
    }
}

/// The same subscription as a trial.
pub fn trial(mut sub: Subscription) -> Subscription {
    sub.spec.plan = Plan::Trial;
    sub
}

/// The same subscription, extended until `until`.
pub fn extended(mut sub: Subscription, until: &str) -> Subscription {
    sub.spec.extension = Some(Extension {
        until: LicenseDate::from(until),
        reason: Some("renewal in progress".into()),
    });
    sub
}

/// The same subscription, shared with `tenants`.
pub fn shared(mut sub: Subscription, tenants: &[&str]) -> Subscription {
    sub.spec.shared_with = tenants
        .iter()
        .map(|t| crate::api::TenantName::from(*t))
        .collect();
    sub
}

/// The texts of the repository's `examples/`, in name order.
pub fn example_texts() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("examples/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).expect("example"))
        .collect()
}
