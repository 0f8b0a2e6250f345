//! No stored object stops the operator for the others, and enforcement does not depend on a
//! status write, against a real API server (kube-apiserver + etcd):
//!
//! - objects the CRD's bounds refuse at apply (settings 300 levels deep, an out-of-range
//!   `attempts` in status) that are stored anyway are skipped and reported (Event
//!   `InvalidObject`, a `Stalled` condition, `mailsec_undecodable_objects`), while an ordinary
//!   tenant created alongside converges; once fixed, they are reconciled as usual;
//! - a tenant whose status writes are all refused (here by a ValidatingAdmissionPolicy on
//!   `tenants/status`) is still scaled to zero at its suspension instant.
//!
//! How the bad objects get stored: the Tenant CRD is re-applied for a moment with the bounds
//! taken out (settings without the depth bound, `attempts` without its maximum), as a cluster
//! would hold objects written before the bounds were shipped, or by a server without them; the
//! generated CRD is then applied again. The API server keeps such objects as stored.

mod common;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::operator::*;
use common::{FIELD_MANAGER, cluster, describe, unique_name};
use kube::api::{Api, Patch, PatchParams};
use mailsec_operator::api::{Tenant, TenantPhase};
use mailsec_operator::controller::{self, Settings};
use mailsec_operator::metrics::Metrics;
use serde_json::{Value, json};

const ESG: &str = "email-safeguard";
const WAIT: Duration = Duration::from_secs(30);

/// The operator of this test binary (in process), and its metrics.
fn operator() -> Arc<Metrics> {
    static METRICS: OnceLock<Arc<Metrics>> = OnceLock::new();
    METRICS
        .get_or_init(|| {
            cluster();
            let metrics = Arc::new(Metrics::default());
            let for_operator = metrics.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("operator runtime");
                if std::env::var_os("RUST_LOG").is_some() {
                    mailsec_operator::telemetry::init(mailsec_operator::telemetry::LogFormat::Text);
                }
                runtime.block_on(async move {
                    let client = cluster().client().await;
                    let settings = Settings {
                        policy: policy(),
                        concurrency: 16,
                        instance: Some("tests".into()),
                        notifier: None,
                        clock: Default::default(),
                    };
                    controller::run_observed(
                        client,
                        settings,
                        for_operator,
                        std::future::pending::<()>(),
                    )
                    .await;
                });
            });
            metrics
        })
        .clone()
}

/// One value of a series in the operator's metrics.
fn sample(metrics: &Metrics, series: &str) -> Option<f64> {
    let text = metrics.encode_text().ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// The Tenant CRD as generated, or with the bounds this test bypasses taken out.
fn tenant_crd(relaxed: bool) -> Value {
    let text = std::fs::read_to_string(common::repo_dir().join("crds/mailsec.io_crds.yaml"))
        .expect("read crds/");
    let mut crd = serde_yaml::Deserializer::from_str(&text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).expect("CRD YAML"))
        .find(|c| c["spec"]["names"]["kind"] == "Tenant")
        .expect("the Tenant CRD");
    if relaxed {
        let schema = &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"];
        schema["spec"]["properties"]["services"]["items"]["properties"]["settings"] =
            json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
        let attempts =
            &mut schema["status"]["properties"]["notifications"]["items"]["properties"]["attempts"];
        attempts
            .as_object_mut()
            .expect("attempts schema")
            .remove("maximum");
    }
    crd
}

fn apply_crd(crd: &Value) {
    let manager = format!("--field-manager={FIELD_MANAGER}");
    let out = cluster().kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            &manager,
            "-f",
            "-",
        ],
        &crd.to_string(),
    );
    assert!(out.status.success(), "apply the CRD: {}", describe(&out));
}

/// JSON text of a tenant whose settings nest `depth` levels (built as text: serde_json's
/// recursion limit stops a `Value` this deep).
fn deep_tenant(name: &str, depth: usize) -> String {
    format!(
        r#"{{"apiVersion":"mailsec.io/v1alpha1","kind":"Tenant","metadata":{{"name":"{name}"}},"spec":{{"users":1,"services":[{{"product":"{ESG}","settings":{{"a":{}1{}}}}}]}}}}"#,
        "{\"k\":".repeat(depth),
        "}".repeat(depth)
    )
}

fn huge_attempts_status(name: &str) -> Value {
    json!({"status": {"notifications": [{
        "id": format!("ExpiringSoon/{ESG}/2027-01-01T00:00:00Z/Email/admin@{name}.example"),
        "milestone": format!("ExpiringSoon/{ESG}/2027-01-01T00:00:00Z"),
        "channel": "Email",
        "recipient": format!("admin@{name}.example"),
        "state": "Pending",
        "attempts": 1_099_511_627_776u64,
    }]}})
}

fn kubectl_jsonpath(name: &str, path: &str) -> String {
    let out = cluster().kubectl(&["get", "tenant", name, "-o", &format!("jsonpath={path}")]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs the tests of this binary one at a time: one re-applies the Tenant CRD, the other
/// measures a deadline.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// (a), (b), (c): refused at apply; stored anyway, skipped and reported while an ordinary
/// tenant converges; reconciled again once fixed.
#[tokio::test(flavor = "multi_thread")]
async fn undecodable_tenants_are_skipped_and_reported_while_the_others_converge() {
    let _serial = serial().await;
    let client = cluster().client().await;
    let tenants: Api<Tenant> = Api::all(client.clone());
    let deep = unique_name("deep");
    let big = unique_name("big-attempts");
    {
        // (a) 300 levels of settings, and (c) attempts beyond u32, are refused with the bounds.
        let out = cluster().kubectl_stdin(&["create", "-f", "-"], &deep_tenant(&deep, 300));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "a 300-deep tenant was accepted");
        assert!(
            err.contains("spec.services[0].settings.a.k.k.k: Too many: 1: must have at most 0"),
            "{err}"
        );
        create_tenant(&client, &big, &[ESG], 1).await;
        let refused = tenants
            .patch_status(
                &big,
                &PatchParams::default(),
                &Patch::Merge(&huge_attempts_status(&big)),
            )
            .await
            .expect_err("attempts beyond its maximum was accepted");
        assert!(
            refused
                .to_string()
                .contains("should be less than or equal to 4294967295"),
            "{refused}"
        );

        // Stored anyway, through a CRD without the bounds (as before they existed).
        apply_crd(&tenant_crd(true));
        let stored = common::eventually(WAIT, || {
            let out = cluster().kubectl_stdin(&["create", "-f", "-"], &deep_tenant(&deep, 300));
            out.status.success().then_some(())
        });
        assert!(
            stored.is_some(),
            "the relaxed CRD never accepted the deep tenant"
        );
        let mut last = None;
        for _ in 0..100 {
            match tenants
                .patch_status(
                    &big,
                    &PatchParams::default(),
                    &Patch::Merge(&huge_attempts_status(&big)),
                )
                .await
            {
                // The response can not be decoded as a Tenant any more: that is the point.
                Ok(_) | Err(kube::Error::SerdeError(_)) => {
                    last = None;
                    break;
                }
                Err(err) => last = Some(err),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            last.is_none(),
            "the relaxed CRD never accepted attempts beyond u32: {last:?}"
        );
        apply_crd(&tenant_crd(false));
    }
    assert!(
        tenants.list(&Default::default()).await.is_err(),
        "a plain typed list fails on these objects (what the operator's watch used to see)"
    );

    // An ordinary tenant alongside, then the operator.
    let ok = unique_name("ordinary");
    create_subscription(
        &client,
        &unique_name("ordinary-esg"),
        &ok,
        ESG,
        in_secs(86_400),
        5,
    )
    .await;
    create_tenant(&client, &ok, &[ESG], 1).await;
    let metrics = operator();
    wait_phase(&client, &ok, TenantPhase::Active, WAIT).await;

    for name in [&deep, &big] {
        expect_events(&client, "Tenant", name, "InvalidObject", 1).await;
        let reason = common::eventually(WAIT, || {
            let r = kubectl_jsonpath(name, "{.status.conditions[?(@.type==\"Stalled\")].reason}");
            (r == "InvalidObject").then_some(r)
        });
        assert!(reason.is_some(), "{name}: no Stalled condition");
    }
    // The plugin reads the others and names the unreadable ones on standard error; asked for
    // one of them by name, it says what is wrong instead of the decoder's bare message.
    let out = mailsec(&["status", "tenant", &ok]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let out = mailsec(&["report", "-o", "wide"]);
    assert!(out.status.success(), "{}", describe(&out));
    let (listed, warned) = (
        stdout_of(&out),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(listed.contains(&ok) && !listed.contains(&deep), "{listed}");
    assert!(
        warned.contains(&format!(
            "warning: Tenant \"{deep}\" left out: it can not be read"
        )) && warned.contains("recursion limit exceeded"),
        "{warned}"
    );
    let out = mailsec(&["status", "tenant", &deep]);
    assert_eq!(out.status.code(), Some(6), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("Tenant \"{deep}\" is stored but can not be read"))
            && err.contains("Stalled condition (reason InvalidObject)"),
        "{err}"
    );

    // Never readable: never evaluated. (The other one may have been read before its status
    // was broken, if the operator already ran: it is then still enforced on that version.)
    assert_eq!(kubectl_jsonpath(&deep, "{.status.phase}"), "", "skipped");
    let events = events_about(&client, "Tenant", &deep).await;
    assert!(
        events
            .iter()
            .any(|(_, note)| note.contains("recursion limit exceeded")),
        "{events:#?}"
    );
    let events = events_about(&client, "Tenant", &big).await;
    assert!(
        events
            .iter()
            .any(|(_, note)| note.contains("1099511627776")),
        "{events:#?}"
    );
    assert_eq!(
        sample(&metrics, "mailsec_undecodable_objects{kind=\"Tenant\"}"),
        Some(2.0)
    );

    // Fixed: the out-of-range value is replaced; the tenant is reconciled and the condition goes.
    let mut fixed = huge_attempts_status(&big);
    fixed["status"]["notifications"][0]["attempts"] = json!(1);
    tenants
        .patch_status(&big, &PatchParams::default(), &Patch::Merge(&fixed))
        .await
        .expect("fix the status");
    wait_tenant(
        &client,
        &big,
        WAIT,
        "a phase and no Stalled condition",
        |t| {
            t.status.as_ref().is_some_and(|s| {
                s.phase.is_some() && !s.conditions.iter().any(|c| c.reason == "InvalidObject")
            })
        },
    )
    .await;
    // Deleted: no longer counted.
    let out = cluster().kubectl(&["delete", "tenant", &deep, "--wait=false"]);
    assert!(out.status.success(), "{}", describe(&out));
    let counted = common::eventually(WAIT, || {
        (sample(&metrics, "mailsec_undecodable_objects{kind=\"Tenant\"}") == Some(0.0))
            .then_some(())
    });
    assert!(counted.is_some(), "{:?}", metrics.encode_text());
}

/// Runs the kubectl plugin against the test cluster.
fn mailsec(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-mailsec"))
        .args(args)
        .env("KUBECONFIG", cluster().kubeconfig())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run kubectl-mailsec")
}

fn stdout_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (d): every status write of the tenant is refused; its workloads still stop on time.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_whose_status_can_not_be_written_is_still_suspended_on_time() {
    let _serial = serial().await;
    let client = cluster().client().await;
    let metrics = operator();
    // The policy refuses status writes of every tenant named `<prefix>-...`: a probe tenant
    // shows when it is in force, before the tenant under test exists.
    let prefix = unique_name("no-status");
    let t = format!("{prefix}-t");
    let policy = format!("deny-status-{prefix}");
    let vap = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": policy},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["mailsec.io"], "apiVersions": ["*"],
                "operations": ["CREATE", "UPDATE"], "resources": ["tenants/status"],
            }]},
            "validations": [{
                "expression": format!("!object.metadata.name.startsWith('{prefix}-')"),
                "message": "status writes of this tenant are refused by the test",
            }],
        },
    });
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": policy},
        "spec": {"policyName": policy, "validationActions": ["Deny"]},
    });
    for obj in [&vap, &binding] {
        let out = cluster().kubectl_stdin(&["apply", "-f", "-"], &obj.to_string());
        assert!(out.status.success(), "{}", describe(&out));
    }
    let probe_name = format!("{prefix}-probe");
    create_tenant(&client, &probe_name, &[ESG], 1).await;
    let tenants: Api<Tenant> = Api::all(client.clone());
    let probe = json!({"status": {"observedGeneration": 0}});
    let in_force = common::eventually_async(WAIT, || async {
        tenants
            .patch_status(&probe_name, &PatchParams::default(), &Patch::Merge(&probe))
            .await
            .is_err()
            .then_some(())
    })
    .await;
    assert!(in_force.is_some(), "the admission policy never took effect");
    create_tenant(&client, &t, &[ESG], 1).await;

    let ns = unique_name("mail");
    create_namespace(&client, &ns, &t).await;
    kubectl_apply(&deployment_manifest(&ns, "filter", &t, None, 2));
    let end = in_secs(2);
    create_subscription(&client, &unique_name("no-status-esg"), &t, ESG, end, 5).await;
    let suspends_at = end + chrono::TimeDelta::seconds(PERIOD_SECS);

    let (replicas, remembered, _) = wait_replicas(&client, &ns, "filter", 0, WAIT).await;
    let seen = chrono::Utc::now();
    assert_eq!((replicas, remembered.as_deref()), (Some(0), Some("2")));
    assert_on_time("scaled to zero without a status", suspends_at, seen);
    assert_eq!(
        tenant(&client, &t).await.status,
        None,
        "no status was ever written"
    );
    let events = events_about(&client, "Tenant", &t).await;
    assert!(
        events.iter().any(|(r, n)| r == "StatusWriteFailed"
            && n.contains("status writes of this tenant are refused by the test")),
        "{events:#?}"
    );
    assert!(
        events.iter().any(|(r, _)| r == "WorkloadsSuspended"),
        "{events:#?}"
    );
    assert!(
        sample(
            &metrics,
            "mailsec_status_writes_total{kind=\"Tenant\",result=\"error\"}"
        )
        .is_some_and(|n| n >= 1.0)
    );
    for kind in [
        "validatingadmissionpolicybinding",
        "validatingadmissionpolicy",
    ] {
        cluster().kubectl(&["delete", kind, &policy]);
    }
}
