//! Possible duplicate tenants, end to end: the operator (in this process, W = G = 3 s, with its
//! notifier and `PossibleDuplicate` notifications switched on) against a real API server and a
//! real SMTP server (aiosmtpd) on loopback.
//!
//! The late-renewal scenario of `examples/09-transfer.yaml`: both tenants flagged with the
//! subscription to move, the Event on each (also in `kubectl describe`), one notification to the
//! admins of the tenant in use; the transfer applied and the hint updated; the unused tenant
//! deleted and the flag cleared. Then: the merger of `examples/08-merger-shared-over-seats.yaml`
//! stays unflagged, an administrator change re-evaluates the tenants paired before and after, and
//! a tenant editor can clear a pair with the annotation.

mod common;

use mailsec_operator::api::ConditionType;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use common::operator::*;
use common::sinks::{Sink, field};
use common::{EDITOR, cluster, describe, free_port, unique_name};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use mailsec_operator::api::{Locale, Subscription, Tenant, TenantPhase};
use mailsec_operator::fixtures::{self, ESG};
use mailsec_operator::notifications::smtp::{SmtpServer, SmtpTls};
use mailsec_operator::notifications::{EmailChannel, NotifierConfig, Retry};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

struct Harness {
    mail_dir: PathBuf,
    _mail: Sink,
}

/// One operator for the file, notifying `PossibleDuplicate` (off by default) by e-mail.
fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        cluster();
        let mail_dir = tempfile::tempdir().expect("tempdir").keep().join("mail");
        let port = free_port();
        let mail = Sink::mail(port, &mail_dir, &[]);
        let server = SmtpServer {
            host: "127.0.0.1".into(),
            port,
            tls: SmtpTls::None,
            credentials: None,
            timeout: Duration::from_secs(5),
        };
        let email = EmailChannel::new(&server, "Licensing <licensing@ops.example>", None)
            .expect("e-mail channel");
        let mut config = NotifierConfig::new(Some(email), None);
        config.kinds = [
            mailsec_operator::engine::MilestoneKind::PossibleDuplicate,
            mailsec_operator::engine::MilestoneKind::Renewed,
        ]
        .into();
        config.retry = Retry {
            base: TimeDelta::milliseconds(500),
            cap: TimeDelta::seconds(2),
            failed_after: 3,
        };
        start_unstopped(Some(config));
        Harness {
            mail_dir,
            _mail: mail,
        }
    })
}

impl Harness {
    /// The PossibleDuplicate mails about `tenant`.
    fn mails_of(&self, tenant: &str) -> Vec<Value> {
        common::sinks::read_records(&self.mail_dir)
            .into_iter()
            .filter(|m| field(m, "tenant") == tenant)
            .filter(|m| field(m, "milestone").starts_with("PossibleDuplicate/"))
            .collect()
    }
}

/// A tenant using the base product with `users` users, the given admins and locale, and, when
/// `settings`, settings of its own (a tenant in use).
async fn create_tenant_with(
    client: &kube::Client,
    name: &str,
    users: i64,
    settings: bool,
    admins: &[&str],
    locale: Locale,
) {
    let api: Api<Tenant> = Api::all(client.clone());
    let mut t = fixtures::tenant(name, &[ESG], users);
    t.metadata.generation = None;
    t.spec.locale = locale;
    t.spec.display_name = Some(format!("{name} Corp"));
    if settings && let Some(s) = t.spec.services.first_mut() {
        s.settings.insert("spamThreshold".into(), 5.into());
    }
    let t = fixtures::with_admins(t, admins);
    api.create(&PostParams::default(), &t)
        .await
        .unwrap_or_else(|e| panic!("create tenant {name}: {e}"));
}

fn condition(t: &Tenant) -> Option<(bool, String, String)> {
    let c = mailsec_operator::api::condition::find(
        &t.status.as_ref()?.conditions,
        ConditionType::PossibleDuplicate,
    )?;
    Some((c.is_true(), c.reason.to_string(), c.message.clone()))
}

/// Waits until the tenant's PossibleDuplicate condition has `status` and its message contains
/// `text`; returns the tenant.
async fn wait_duplicate(client: &kube::Client, name: &str, status: bool, text: &str) -> Tenant {
    wait_tenant(
        client,
        name,
        WAIT,
        &format!("PossibleDuplicate={status} with {text:?}"),
        |t| condition(t).is_some_and(|(s, _, m)| s == status && m.contains(text)),
    )
    .await;
    tenant(client, name).await
}

/// A subscription of `owner` from `start_days` to `end_days` from now (whole days).
async fn subscription_between(
    client: &kube::Client,
    name: &str,
    owner: &str,
    start_days: i64,
    end_days: i64,
) {
    let day = |d: i64| rfc3339(Utc::now() + TimeDelta::days(d));
    let sub = fixtures::subscription(name, owner, ESG, &day(start_days), &day(end_days), 100);
    create(client, sub).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_renewal_on_a_second_tenant_is_pointed_at_until_it_is_repaired() {
    let h = harness();
    let client = cluster().client().await;
    let used = unique_name("soylent");
    let unused = unique_name("soylent-new");
    let shared = format!("Admin@{used}.example");
    // The tenant in use: users and settings, its licence about to end; the renewal landed on
    // a second tenant created for it, with the same administrator (written in another case).
    create_tenant_with(
        &client,
        &used,
        80,
        true,
        &[&shared, &format!("it@{used}.example")],
        Locale::Ja,
    )
    .await;
    create_tenant_with(
        &client,
        &unused,
        0,
        false,
        &[&shared.to_lowercase(), &format!("new@{used}.example")],
        Locale::En,
    )
    .await;
    let old = format!("{used}-esg-2025");
    let renewal = format!("{used}-esg-2026");
    subscription_between(&client, &old, &used, -300, 20).await;
    subscription_between(&client, &renewal, &unused, 20, 385).await;

    let hint = format!(
        "move subscription {renewal} to this tenant (spec.tenantRef: {used}), then delete tenant {unused} once it owns nothing in force"
    );
    let t = wait_duplicate(&client, &used, true, &hint).await;
    let (_, reason, message) = condition(&t).expect("condition");
    assert_eq!(reason, "SharesAdmins");
    assert!(
        message.contains(&format!(
            "Possible duplicate of tenant {unused}: both list the administrator address {}",
            shared.to_lowercase()
        )),
        "{message}"
    );
    let status = t.status.clone().expect("status");
    assert_eq!(status.possible_duplicates.len(), 1);
    assert_eq!(status.possible_duplicates[0].tenant, unused);
    assert_eq!(status.possible_duplicates[0].tenant_in_use, used);
    assert_eq!(
        status.possible_duplicates[0].subscriptions_to_move,
        std::slice::from_ref(&renewal)
    );
    // Never a phase: the tenant in use, covered for 20 more days, stays Active.
    assert_eq!(status.phase, Some(TenantPhase::Active));
    let other = wait_duplicate(
        &client,
        &unused,
        true,
        &format!("Assuming tenant {used} is the one in use"),
    )
    .await;
    assert!(
        condition(&other)
            .expect("condition")
            .2
            .contains("then delete this tenant once it owns nothing in force")
    );

    // One Event on each tenant, shown by `kubectl describe` too.
    expect_events(&client, "Tenant", &used, "PossibleDuplicate", 1).await;
    expect_events(&client, "Tenant", &unused, "PossibleDuplicate", 1).await;
    let described = common::eventually(Duration::from_secs(10), || {
        let text = describe(&cluster().kubectl(&["describe", "tenant", &used]));
        text.contains("PossibleDuplicate").then_some(text)
    })
    .expect("kubectl describe shows the PossibleDuplicate Event");
    assert!(
        described.contains(&format!("Possible duplicate of tenant {unused}")),
        "{described}"
    );

    // One notification per admin of the tenant in use, in its language; none to the other's.
    common::eventually_async(WAIT, || async {
        (h.mails_of(&used).len() >= 2).then_some(())
    })
    .await
    .expect("the admins of the tenant in use are notified");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mails = h.mails_of(&used);
    assert_eq!(mails.len(), 2, "{mails:#?}");
    let mut to: Vec<String> = mails
        .iter()
        .map(|m| m["rcpt_tos"][0].as_str().unwrap_or_default().to_string())
        .collect();
    to.sort();
    assert_eq!(
        to,
        [shared.clone(), format!("it@{used}.example")],
        "as the tenant lists them"
    );
    for m in &mails {
        assert_eq!(
            field(m, "subject"),
            format!("【要対応】{used} Corp: 重複したテナント {unused} がある可能性があります")
        );
        assert!(
            field(m, "body").contains(&format!(
                "サブスクリプション {renewal} をテナント {used} へ移行 (spec.tenantRef: {used})"
            )),
            "{m:#?}"
        );
    }
    assert!(h.mails_of(&unused).is_empty(), "{:#?}", h.mails_of(&unused));

    // The transfer: the pair remains (same administrator), the hint now says to delete the
    // unused tenant; nothing is announced again.
    let subs: Api<Subscription> = Api::all(client.clone());
    subs.patch(
        &renewal,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"tenantRef": used}})),
    )
    .await
    .expect("transfer");
    let t = wait_duplicate(
        &client,
        &used,
        true,
        &format!("tenant {unused} holds no subscription that the tenant in use lacks"),
    )
    .await;
    assert!(
        t.status.as_ref().expect("status").possible_duplicates[0]
            .subscriptions_to_move
            .is_empty()
    );
    wait_duplicate(
        &client,
        &unused,
        true,
        "delete this tenant once it owns nothing in force",
    )
    .await;
    expect_events(&client, "Tenant", &used, "PossibleDuplicate", 1).await;

    // The unused tenant owns nothing in force: it can be deleted, and the flag clears.
    let tenants: Api<Tenant> = Api::all(client.clone());
    tenants
        .delete(&unused, &DeleteParams::default())
        .await
        .expect("delete the unused tenant");
    let t = wait_duplicate(&client, &used, false, "").await;
    assert_eq!(
        condition(&t).map(|(s, r, _)| (s, r)),
        Some((false, "NoDuplicate".into()))
    );
    assert!(t.status.expect("status").possible_duplicates.is_empty());
    common::eventually_async(Duration::from_secs(20), || async {
        tenants
            .get_opt(&unused)
            .await
            .ok()
            .flatten()
            .is_none()
            .then_some(())
    })
    .await
    .expect("the unused tenant is gone (its finalizer was lifted)");
    assert_eq!(h.mails_of(&used).len(), 2, "nothing mailed again");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_merger_is_not_a_duplicate_and_admin_changes_update_both_tenants() {
    harness();
    let client = cluster().client().await;
    // The merger: Wayne's administrator looks after Stark too; the shared subscription links
    // them on purpose.
    let wayne = unique_name("wayne");
    let stark = unique_name("stark");
    let lucius = format!("lucius@{wayne}.example");
    create_tenant_with(&client, &wayne, 300, true, &[&lucius], Locale::En).await;
    create_tenant_with(
        &client,
        &stark,
        250,
        true,
        &[&format!("pepper@{stark}.example"), &lucius],
        Locale::En,
    )
    .await;
    let mut sub = fixtures::subscription(
        &format!("{wayne}-esg"),
        &wayne,
        ESG,
        &rfc3339(Utc::now() - TimeDelta::days(1)),
        &rfc3339(Utc::now() + TimeDelta::days(200)),
        600,
    );
    sub = fixtures::shared(sub, &[&stark]);
    create(&client, sub).await;
    for t in [&wayne, &stark] {
        wait_duplicate(&client, t, false, "").await;
    }

    // A third tenant with an address of its own: not paired. Then it lists Lucius too: it
    // pairs with both (each re-evaluated although only the third one changed); then it drops
    // him again: both are cleared.
    let third = unique_name("wayne-shop");
    create_tenant_with(
        &client,
        &third,
        5,
        false,
        &[&format!("shop@{third}.example")],
        Locale::En,
    )
    .await;
    wait_duplicate(&client, &third, false, "").await;
    let tenants: Api<Tenant> = Api::all(client.clone());
    let set_admins = |admins: Vec<&str>| {
        let admins: Vec<Value> = admins.iter().map(|a| json!({"email": a})).collect();
        let tenants = tenants.clone();
        let third = third.clone();
        async move {
            tenants
                .patch(
                    &third,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"admins": admins}})),
                )
                .await
                .expect("patch admins")
        }
    };
    let shop = format!("shop@{third}.example");
    set_admins(vec![&shop, &lucius.to_uppercase()]).await;
    wait_duplicate(
        &client,
        &wayne,
        true,
        &format!("Possible duplicate of tenant {third}"),
    )
    .await;
    wait_duplicate(
        &client,
        &stark,
        true,
        &format!("Possible duplicate of tenant {third}"),
    )
    .await;
    let t = wait_duplicate(&client, &third, true, "2 possible duplicates").await;
    let others: Vec<String> = t
        .status
        .expect("status")
        .possible_duplicates
        .into_iter()
        .map(|d| d.tenant)
        .collect();
    let mut expected = vec![stark.clone(), wayne.clone()];
    expected.sort();
    assert_eq!(others, expected);
    // Wayne and Stark still do not flag each other.
    let w = tenant(&client, &wayne).await;
    assert!(
        w.status
            .expect("status")
            .possible_duplicates
            .iter()
            .all(|d| d.tenant == third)
    );

    set_admins(vec![&shop]).await;
    for t in [&wayne, &stark, &third] {
        wait_duplicate(&client, t, false, "").await;
    }
}

/// Whoever may edit a tenant may declare it distinct from another (it only silences a hint; it
/// changes no phase and no licence), here as a tenant editor, not the operator or an admin.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_editor_can_clear_a_pair_with_the_annotation() {
    harness();
    let client = cluster().client().await;
    let a = unique_name("branch-a");
    let b = unique_name("branch-b");
    let helpdesk = format!("helpdesk@{a}.example");
    create_tenant_with(&client, &a, 10, true, &[&helpdesk], Locale::En).await;
    create_tenant_with(&client, &b, 10, true, &[&helpdesk], Locale::En).await;
    wait_duplicate(
        &client,
        &a,
        true,
        &format!("mailsec.io/not-duplicate-of={b}"),
    )
    .await;
    wait_duplicate(
        &client,
        &b,
        true,
        &format!("Possible duplicate of tenant {a}"),
    )
    .await;

    let out = cluster().kubectl(&[
        "annotate",
        "tenant",
        &b,
        &format!("mailsec.io/not-duplicate-of={a}"),
        EDITOR[0],
        EDITOR[1],
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    wait_duplicate(&client, &a, false, "").await;
    wait_duplicate(&client, &b, false, "").await;
    expect_events(&client, "Tenant", &a, "PossibleDuplicate", 1).await;
}
