//! Engine throughput: one tenant with 3 services and 5 subscriptions (a typical production tenant),
//! evaluated at an instant in each phase. The baseline in the same run is cloning the inputs
//! the engine reads (a tenant and its 5 subscriptions), so the figure is reported as a ratio that
//! survives noisy machines: `cargo bench --bench engine`.

use std::hint::black_box;

use chrono::{DateTime, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use mailsec_operator::api::{Subscription, Tenant};
use mailsec_operator::engine::{Policy, TenantInput, TenantUsers, evaluate_tenant};
use mailsec_operator::fixtures::{ESG, ETDR, ETI};
use mailsec_operator::fixtures::{extended, shared, subscription, tenant, trial};

fn inputs() -> (Tenant, Vec<Subscription>, TenantUsers) {
    let mut t = tenant("acme", &[ESG, ETDR, ETI], 420);
    let subs = vec![
        subscription(
            "acme-esg-2026",
            "acme",
            ESG,
            "2026-01-01",
            "2026-12-31",
            500,
        ),
        subscription(
            "acme-esg-2027",
            "acme",
            ESG,
            "2027-01-01",
            "2027-12-31",
            500,
        ),
        extended(
            subscription(
                "acme-etdr-2026",
                "acme",
                ETDR,
                "2026-01-01",
                "2026-11-30",
                500,
            ),
            "2027-01-15",
        ),
        shared(
            subscription(
                "acme-eti-2026",
                "acme",
                ETI,
                "2026-02-01",
                "2027-01-31",
                800,
            ),
            &["acme-emea"],
        ),
        trial(subscription(
            "acme-eti-trial",
            "acme",
            ETI,
            "2025-12-01",
            "2026-01-31",
            50,
        )),
    ];
    let users: TenantUsers = [("acme".to_string(), 420), ("acme-emea".to_string(), 200)].into();
    // A tenant as the controller sees it: with the status of its previous evaluation.
    let refs: Vec<&Subscription> = subs.iter().collect();
    t.status = Some(
        evaluate_tenant(
            &TenantInput::new(&t, &refs, &users),
            &Policy::default(),
            at("2026-06-01"),
        )
        .status,
    );
    (t, subs, users)
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&format!("{s}T00:00:00Z"))
        .expect("instant")
        .with_timezone(&Utc)
}

fn engine(c: &mut Criterion) {
    let (t, subs, users) = inputs();
    let refs: Vec<&Subscription> = subs.iter().collect();
    let policy = Policy::default();
    let mut group = c.benchmark_group("engine");
    group.bench_function("baseline: clone tenant + 5 subscriptions", |b| {
        b.iter(|| black_box((black_box(&t).clone(), black_box(&subs).clone())))
    });
    for (label, now) in [
        ("steady (no change)", at("2026-06-01")),
        ("expiring soon", at("2026-12-15")),
        ("grace + trial ended", at("2027-01-20")),
    ] {
        group.bench_function(format!("evaluate_tenant: {label}"), |b| {
            b.iter(|| {
                black_box(evaluate_tenant(
                    black_box(&TenantInput::new(&t, &refs, &users)),
                    &policy,
                    black_box(now),
                ))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
