//! Read-only mode enforced at the API server by the ValidatingAdmissionPolicy in
//! `deploy/read-only-policy.yaml`, driven by the status the operator writes (W = G = 3 s).

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::operator::*;
use common::{cluster, describe, unique_name};
use kube::api::{Api, Patch, PatchParams};
use mailsec_operator::api::{ServicePhase, Subscription, Tenant, TenantPhase};
use mailsec_operator::fixtures::{ESG, ETI};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

fn setup() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let policy = common::repo_dir().join("deploy/read-only-policy.yaml");
        let out = cluster().kubectl(&[
            "apply",
            "--server-side",
            "-f",
            &policy.display().to_string(),
        ]);
        assert!(
            out.status.success(),
            "install the policy: {}",
            describe(&out)
        );
        start_unstopped(None);
    });
}

async fn set_settings(
    client: &kube::Client,
    tenant: &str,
    product: &str,
    settings: serde_json::Value,
) -> Result<Tenant, kube::Error> {
    let api: Api<Tenant> = Api::all(client.clone());
    let mut t = api.get(tenant).await?;
    for s in &mut t.spec.services {
        if s.product == product {
            s.settings = settings
                .as_object()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .collect();
        }
    }
    let patch = json!({"spec": {"services": t.spec.services}});
    api.patch(tenant, &PatchParams::default(), &Patch::Merge(&patch))
        .await
}

/// The policy is compiled asynchronously after it is created: wait until it denies.
async fn until_denied(
    client: &kube::Client,
    tenant: &str,
    product: &str,
    settings: serde_json::Value,
) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match set_settings(client, tenant, product, settings.clone()).await {
            Err(kube::Error::Api(e)) if e.code == 403 || e.code == 422 => return e.message,
            Err(e) => panic!("unexpected error: {e}"),
            Ok(_) if tokio::time::Instant::now() > deadline => {
                panic!("the settings change to {product} was accepted while read-only")
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn frozen_add_on_settings_are_refused_with_the_way_out() {
    setup();
    let client = cluster().client().await;
    let t = unique_name("vap-addon");
    let eti = unique_name("vap-eti");
    subscribe(&client, "vap-esg", &t, ESG, 86_400, 50).await;
    create_subscription(&client, &eti, &t, ETI, in_secs(-60), 50).await;
    let mut tn = mailsec_operator::fixtures::tenant(&t, &[ESG, ETI], 10);
    tn.metadata.generation = None;
    tn.spec.services[1].settings = [("isolate".to_string(), json!(true))].into();
    Api::<Tenant>::all(client.clone())
        .create(&Default::default(), &tn)
        .await
        .expect("create");
    // Ended a minute ago with a 3 s grace period: the add-on is suspended, its settings frozen.
    wait_tenant(&client, &t, WAIT, "add-on suspended", |tn| {
        tn.status.as_ref().is_some_and(|s| {
            s.services
                .iter()
                .any(|x| x.product == ETI && x.phase == ServicePhase::Suspended)
        })
    })
    .await;

    let message = until_denied(&client, &t, ETI, json!({"isolate": false})).await;
    for part in [
        "settings of email-threat-isolation can not be changed",
        &eti,
        "is Suspended",
        "Renew or extend the subscription",
    ] {
        assert!(
            message.contains(part),
            "the message names {part:?}: {message}"
        );
    }
    // Everything else stays allowed: the base service's settings, admins, users.
    set_settings(&client, &t, ESG, json!({"spamThreshold": 3}))
        .await
        .expect("base settings are not frozen");
    let api: Api<Tenant> = Api::all(client.clone());
    api.patch(
        &t,
        &PatchParams::default(),
        &Patch::Merge(
            json!({"spec": {"admins": [{"email": "new-admin@example.com"}], "users": 12}}),
        ),
    )
    .await
    .expect("admins and users can change");

    // Extending the subscription lifts read-only mode; then the change goes through.
    let subs: Api<Subscription> = Api::all(client.clone());
    subs.patch(&eti, &PatchParams::default(), &Patch::Merge(json!({"spec": {"extension": {"until": rfc3339(in_secs(86_400)), "reason": "renewal in progress"}}})))
        .await
        .expect("extending a subscription is allowed");
    wait_tenant(&client, &t, WAIT, "add-on active", |tn| {
        tn.status.as_ref().is_some_and(|s| {
            s.services
                .iter()
                .any(|x| x.product == ETI && x.phase == ServicePhase::Active)
        })
    })
    .await;
    set_settings(&client, &t, ETI, json!({"isolate": false}))
        .await
        .expect("accepted after the extension");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_tenant_freezes_every_service_until_renewed() {
    setup();
    let client = cluster().client().await;
    let t = unique_name("vap-tenant");
    let esg = unique_name("vap-base");
    create_subscription(&client, &esg, &t, ESG, in_secs(1), 50).await;
    subscribe(&client, "vap-eti2", &t, ETI, 86_400, 50).await;
    create_tenant(&client, &t, &[ESG, ETI], 10).await;
    wait_phase(&client, &t, TenantPhase::ReadOnly, WAIT).await;

    let message = until_denied(&client, &t, ETI, json!({"isolate": true})).await;
    assert!(
        message.contains(&esg) && message.contains("whole tenant ReadOnly"),
        "{message}"
    );
    until_denied(&client, &t, ESG, json!({"spamThreshold": 1})).await;

    // The operator's own status writes are not blocked: the tenant moves on to Suspended.
    wait_phase(&client, &t, TenantPhase::Suspended, WAIT).await;
    until_denied(&client, &t, ESG, json!({"spamThreshold": 2})).await;

    subscribe(&client, "vap-renew", &t, ESG, 86_400, 50).await;
    wait_phase(&client, &t, TenantPhase::Active, WAIT).await;
    set_settings(&client, &t, ESG, json!({"spamThreshold": 2}))
        .await
        .expect("accepted after renewal");
}
