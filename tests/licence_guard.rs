//! The licence guard at the API server (`deploy/licence-guard-policy.yaml` with
//! `deploy/read-only-policy.yaml`), tried as the people it guards against: an editor of Tenant
//! specs (`--as=jane@customer.example --as-group=mailsec:tenant-editors`; the test server's
//! admission sees impersonated users, its authorizer allows everything, so what is refused here
//! is refused by the policies, not by RBAC) and a licence administrator
//! (`--as-group=mailsec:licence-admins`). The operator runs in this process (W = G = 3 s) with
//! the test server's admin identity, a member of `system:masters`, which the policies let write
//! status as the deploy file's default ServiceAccount would; and, as the Helm chart runs it
//! beside these policies, with `--deletion-guard=admission`: no finalizer on tenants.

mod common;

use std::process::Output;
use std::sync::OnceLock;
use std::time::Duration;

use common::operator::*;
use common::{EDITOR, cluster, describe, unique_name};
use kube::api::Api;
use mailsec_operator::api::{Subscription, Tenant, TenantPhase};
use mailsec_operator::controller::DeletionGuard;
use mailsec_operator::fixtures::ESG;

const WAIT: Duration = Duration::from_secs(20);
const LICENCE_ADMIN: [&str; 2] = [
    "--as=lee@platform.example",
    "--as-group=mailsec:licence-admins",
];

fn setup() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        for file in [
            "deploy/read-only-policy.yaml",
            "deploy/licence-guard-policy.yaml",
        ] {
            let path = common::repo_dir().join(file);
            let out =
                cluster().kubectl(&["apply", "--server-side", "-f", &path.display().to_string()]);
            assert!(out.status.success(), "install {file}: {}", describe(&out));
        }
        spawn_guarded_by(
            DeletionGuard::Admission,
            None,
            Default::default(),
            std::future::pending(),
        );
    });
}

/// `kubectl ARGS` as `who`.
fn kubectl_as(who: [&str; 2], args: &[&str]) -> Output {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(who);
    cluster().kubectl(&all)
}

/// `kubectl patch TARGET --type=TYPE -p PATCH` as `who`; `target` is the kind and name, and
/// any flag that belongs before the patch (`--subresource=status`).
fn patch_as(who: [&str; 2], target: &[&str], patch_type: &str, patch: &str) -> Output {
    let type_flag = format!("--type={patch_type}");
    let mut args = vec!["patch"];
    args.extend_from_slice(target);
    args.extend([type_flag.as_str(), "-p", patch]);
    kubectl_as(who, &args)
}

/// `kubectl delete tenant NAME --wait=false` as `who`.
fn delete_tenant_as(who: [&str; 2], name: &str) -> Output {
    kubectl_as(who, &["delete", "tenant", name, "--wait=false"])
}

/// Asserts that the command was refused with a message containing every one of `texts`.
fn refused(out: &Output, texts: &[&str]) {
    let text = describe(out);
    assert!(!out.status.success(), "expected a refusal: {text}");
    for t in texts {
        assert!(text.contains(t), "the refusal should say {t:?}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_editor_can_not_write_status_nor_escape_read_only_by_deleting() {
    setup();
    let client = cluster().client().await;
    let t = unique_name("guarded");
    let s = format!("{t}-esg");
    // Covered from the start (a tenant with no subscription is read-only as soon as the
    // operator sees it, and the editor's settings change below would race with that).
    create_subscription(&client, &s, &t, ESG, in_secs(6), 50).await;
    create_tenant(&client, &t, &[ESG], 10).await;
    let out = patch_as(
        EDITOR,
        &["tenant", &t],
        "merge",
        r#"{"spec":{"services":[{"product":"email-safeguard","settings":{"spamThreshold":5}}]}}"#,
    );
    assert!(
        out.status.success(),
        "an editor edits settings: {}",
        describe(&out)
    );
    wait_phase(&client, &t, TenantPhase::ReadOnly, WAIT).await;

    // Status is the operator's verdict: an editor can not rewrite it.
    for (kind, name) in [("tenant", t.as_str()), ("subscription", s.as_str())] {
        let out = patch_as(
            EDITOR,
            &[kind, name, "--subresource=status"],
            "merge",
            r#"{"status":{"phase":"Active"}}"#,
        );
        refused(
            &out,
            &[
                "is written by the mailsec operator only",
                "jane@customer.example may change the spec",
            ],
        );
    }
    // Frozen settings stay frozen, and a service added now is frozen too.
    let out = patch_as(
        EDITOR,
        &["tenant", &t],
        "merge",
        r#"{"spec":{"services":[{"product":"email-safeguard","settings":{"spamThreshold":1}}]}}"#,
    );
    refused(
        &out,
        &["settings of email-safeguard can not be changed while read-only"],
    );
    let out = patch_as(
        EDITOR,
        &["tenant", &t],
        "merge",
        r#"{"spec":{"services":[{"product":"email-safeguard","settings":{"spamThreshold":5}},{"product":"email-threat-isolation","settings":{"isolate":"all"}}]}}"#,
    );
    refused(
        &out,
        &[
            "settings of email-threat-isolation can not be changed while read-only",
            "freezes every service",
        ],
    );

    // Deleting (to recreate it without its lapse) is refused, also with the force-delete
    // annotation, which an editor can set. The operator guards deletion with the policy alone:
    // the tenant carries no finalizer that an editor could remove.
    let out = delete_tenant_as(EDITOR, &t);
    refused(
        &out,
        &[
            &format!("tenant {t} can not be deleted: it is ReadOnly"),
            &format!("it owns subscription(s) still in use: {s}"),
            "mailsec:licence-admins",
        ],
    );
    assert_eq!(
        tenant(&client, &t).await.metadata.finalizers,
        None,
        "no finalizer with --deletion-guard=admission"
    );
    let out = kubectl_as(
        EDITOR,
        &["annotate", "tenant", &t, "mailsec.io/force-delete=true"],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let out = delete_tenant_as(EDITOR, &t);
    refused(&out, &["can not be deleted: it is ReadOnly"]);
    let stored = tenant(&client, &t).await;
    assert!(stored.metadata.deletion_timestamp.is_none());
    assert_eq!(
        stored.status.and_then(|s| s.phase),
        Some(TenantPhase::ReadOnly),
        "status untouched"
    );

    // The deliberately privileged path: a licence administrator deletes it (force-delete set).
    let out = delete_tenant_as(LICENCE_ADMIN, &t);
    assert!(
        out.status.success(),
        "a licence admin deletes: {}",
        describe(&out)
    );
    let api: Api<Tenant> = Api::all(client.clone());
    common::eventually_async(WAIT, || async {
        api.get_opt(&t).await.ok().flatten().is_none().then_some(())
    })
    .await
    .expect("the tenant is gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_holding_a_licence_is_not_its_editors_to_delete() {
    setup();
    let client = cluster().client().await;
    let a = unique_name("holder");
    let b = unique_name("keeper");
    let s = format!("{a}-esg");
    create_tenant(&client, &a, &[ESG], 10).await;
    create_tenant(&client, &b, &[ESG], 10).await;
    create_subscription(&client, &s, &a, ESG, in_secs(86_400 * 90), 50).await;
    create_subscription(
        &client,
        &format!("{b}-esg"),
        &b,
        ESG,
        in_secs(86_400 * 90),
        50,
    )
    .await;
    wait_tenant(&client, &a, WAIT, "licencesHeld", |t| {
        t.status
            .as_ref()
            .is_some_and(|st| st.licences_held == [s.clone()])
    })
    .await;
    wait_phase(&client, &a, TenantPhase::Active, WAIT).await;

    let out = delete_tenant_as(EDITOR, &a);
    refused(
        &out,
        &[
            &format!("it owns subscription(s) still in use: {s}"),
            "transfer them to the tenant that keeps them (spec.tenantRef) first",
        ],
    );

    // Transferred, it holds nothing any more, but without a subscription it is frozen: still
    // not its editor's to delete. A licence administrator deletes it at once (no finalizer
    // holds it), and the subscription stays with the tenant that keeps it.
    let subs: Api<Subscription> = Api::all(client.clone());
    subs.patch(
        &s,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({"spec": {"tenantRef": b}})),
    )
    .await
    .expect("transfer");
    wait_tenant(&client, &a, WAIT, "no licence held", |t| {
        t.status
            .as_ref()
            .is_some_and(|st| st.licences_held.is_empty())
    })
    .await;
    wait_phase(&client, &a, TenantPhase::ReadOnly, WAIT).await;
    refused(
        &delete_tenant_as(EDITOR, &a),
        &["can not be deleted: it is ReadOnly"],
    );
    let out = delete_tenant_as(LICENCE_ADMIN, &a);
    assert!(out.status.success(), "{}", describe(&out));
    let api: Api<Tenant> = Api::all(client.clone());
    common::eventually_async(WAIT, || async {
        api.get_opt(&a).await.ok().flatten().is_none().then_some(())
    })
    .await
    .expect("deleted");
    let kept = subs.get(&s).await.expect("the subscription stays");
    assert_eq!(kept.spec.tenant_ref, b);
}
