//! Notifications end to end: the operator (in this process, W = G = 3 s) with its notifier, a
//! real SMTP server (aiosmtpd) and a webhook receiver on loopback, counting what arrives on the
//! receiving side.
//!
//! The tests of this file share one operator and its two sinks, and take turns (`SERIAL`): the
//! outage test stops and restarts the sinks.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use common::operator::*;
use common::sinks::{Sink, field, read_records};
use common::{cluster, free_port, unique_name};
use kube::api::{Api, PostParams};
use mailsec_operator::api::{
    Admin, Locale, NotificationChannel, NotificationState, Tenant, TenantPhase,
};
use mailsec_operator::fixtures::{self, ESG};
use mailsec_operator::notifications::outbox::{Recipient, delivery_id};
use mailsec_operator::notifications::smtp::{SmtpServer, SmtpTls};
use mailsec_operator::notifications::text::format_date;
use mailsec_operator::notifications::webhook::Webhook;
use mailsec_operator::notifications::{EmailChannel, NotifierConfig, NotifierStats, Retry};
use serde_json::Value;

const SECRET: &str = "webhook-test-secret";
const WAIT: Duration = Duration::from_secs(30);

/// The tests of this file take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Harness {
    smtp_port: u16,
    hook_port: u16,
    base: PathBuf,
    mail: Mutex<Sink>,
    hook: Mutex<Sink>,
    stats: std::sync::Arc<NotifierStats>,
    writes: std::sync::Arc<mailsec_operator::controller::api_counter::ApiCounters>,
}

impl Harness {
    /// Starts the SMTP server again if a failed test left it stopped.
    fn ensure_up(&self) {
        let mut mail = self.mail.lock().unwrap_or_else(|p| p.into_inner());
        if !mail.running() {
            *mail = Sink::mail(
                self.smtp_port,
                &self.base.join(format!("mail-{}", unique_name("up"))),
                &[],
            );
        }
    }

    /// Everything the SMTP server received (in every directory it wrote to), in order.
    fn mails(&self) -> Vec<Value> {
        dirs(&self.base, "mail")
    }

    fn hooks(&self) -> Vec<Value> {
        dirs(&self.base, "hook")
    }
}

fn dirs(base: &std::path::Path, prefix: &str) -> Vec<Value> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(base)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(prefix))
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names.iter().flat_map(|d| read_records(d)).collect()
}

/// The shared operator, with e-mail and webhook, fast retries (0.5 s doubling to 2 s, Failed
/// after 3 attempts).
fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        cluster();
        let base = tempfile::tempdir().expect("tempdir").keep();
        let smtp_port = free_port();
        let hook_port = free_port();
        let mail = Sink::mail(smtp_port, &base.join("mail-0"), &[]);
        let hook = Sink::webhook(hook_port, &base.join("hook-0"), SECRET, &[]);
        let server = SmtpServer {
            host: "127.0.0.1".into(),
            port: smtp_port,
            tls: SmtpTls::None,
            credentials: None,
            timeout: Duration::from_secs(5),
        };
        let email = EmailChannel::new(
            &server,
            "Licensing <licensing@ops.example>",
            Some("support@ops.example"),
        )
        .expect("e-mail channel");
        let webhook = Webhook::new(
            &format!("http://127.0.0.1:{hook_port}/hooks/mailsec"),
            SECRET.as_bytes().to_vec(),
            Duration::from_secs(5),
        )
        .expect("webhook");
        let mut config = NotifierConfig::new(Some(email), Some(webhook));
        config.retry = Retry {
            base: TimeDelta::milliseconds(500),
            cap: TimeDelta::seconds(2),
            failed_after: 3,
        };
        let stats = config.stats.clone();
        let writes = start_unstopped(Some(config));
        Harness {
            smtp_port,
            hook_port,
            base,
            mail: Mutex::new(mail),
            hook: Mutex::new(hook),
            stats,
            writes,
        }
    })
}

async fn create_tenant_with(
    client: &kube::Client,
    name: &str,
    display: &str,
    locale: Locale,
    admins: &[(&str, Option<&str>)],
) {
    let api: Api<Tenant> = Api::all(client.clone());
    let mut t = fixtures::tenant(name, &[ESG], 10);
    t.metadata.generation = None;
    t.spec.display_name = Some(display.into());
    t.spec.locale = locale;
    t.spec.admins = admins
        .iter()
        .map(|(email, n)| Admin {
            email: email.to_string(),
            name: n.map(str::to_string),
        })
        .collect();
    api.create(&PostParams::default(), &t)
        .await
        .unwrap_or_else(|e| panic!("create tenant {name}: {e}"));
}

/// Records about `tenant`.
fn mails_of(h: &Harness, tenant: &str) -> Vec<Value> {
    h.mails()
        .into_iter()
        .filter(|m| field(m, "tenant") == tenant)
        .collect()
}

fn hooks_of(h: &Harness, tenant: &str) -> Vec<Value> {
    h.hooks()
        .into_iter()
        .filter(|r| r["body"]["tenant"]["name"] == tenant)
        .collect()
}

/// Waits until `count(tenant)` reaches `n`.
async fn wait_count(what: &str, n: usize, count: impl Fn() -> usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let c = count();
        if c >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {n} {what}, have {c}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The milestone kind of a mail (from its X-Mailsec-Milestone header).
fn kind_of(mail: &Value) -> String {
    field(mail, "milestone")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

fn rcpt(mail: &Value) -> String {
    mail["rcpt_tos"][0].as_str().unwrap_or_default().to_string()
}

/// Runs a tenant whose subscription ends at `end` through ExpiringSoon, ReadOnly, Suspended and
/// back (Renewed): returns `end` and the renewal's end.
async fn run_out_and_renew(
    client: &kube::Client,
    tenant: &str,
    end: DateTime<Utc>,
) -> (DateTime<Utc>, DateTime<Utc>) {
    wait_phase(client, tenant, TenantPhase::Suspended, WAIT).await;
    let renewed_end = in_secs(86_400 * 365);
    create_subscription(
        client,
        &format!("{tenant}-esg-renewal"),
        tenant,
        ESG,
        renewed_end,
        50,
    )
    .await;
    wait_phase(client, tenant, TenantPhase::Active, WAIT).await;
    (end, renewed_end)
}

#[tokio::test(flavor = "multi_thread")]
async fn each_milestone_is_mailed_once_to_each_admin_in_english_and_japanese() {
    let _turn = SERIAL.lock().await;
    let h = harness();
    h.ensure_up();
    let client = cluster().client().await;
    let en = unique_name("notify-en");
    let ja = unique_name("notify-ja");
    let en_admins = [
        ("alice@globex.example", Some("Alice")),
        ("bob@globex.example", None),
    ];
    let ja_admins = [
        ("joho@globex.example.jp", Some("情報システム部")),
        ("kanri@globex.example.jp", None),
    ];
    // Subscriptions first, so that no tenant is ever seen without one (which would be a
    // SubscriptionMissing milestone, and its coverage a Renewed one).
    let end = in_secs(5);
    for t in [&en, &ja] {
        create_subscription(&client, &format!("{t}-esg"), t, ESG, end, 50).await;
    }
    create_tenant_with(&client, &en, "Globex Corp", Locale::En, &en_admins).await;
    create_tenant_with(&client, &ja, "グローバル株式会社", Locale::Ja, &ja_admins).await;
    let before = h.stats.snapshot();
    let (en_run, ja_run) = tokio::join!(
        run_out_and_renew(&client, &en, end),
        run_out_and_renew(&client, &ja, end)
    );
    let kinds = ["ExpiringSoon", "ReadOnly", "Suspended", "Renewed"];

    // 4 milestones x 2 admins per tenant by e-mail, 4 webhook calls per tenant.
    wait_count("e-mails", 16, || {
        mails_of(h, &en).len() + mails_of(h, &ja).len()
    })
    .await;
    wait_count("webhook calls", 8, || {
        hooks_of(h, &en).len() + hooks_of(h, &ja).len()
    })
    .await;
    // Nothing more comes later: no repeats.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let writes_before = h.writes.writes();

    for (tenant, admins, locale, (end, renewed_end)) in [
        (&en, &en_admins, Locale::En, en_run),
        (&ja, &ja_admins, Locale::Ja, ja_run),
    ] {
        let mails = mails_of(h, tenant);
        assert_eq!(mails.len(), 8, "{tenant}: exactly 8 e-mails: {mails:#?}");
        let tn = tenant_status(&client, tenant).await;
        let suspend = end + TimeDelta::seconds(PERIOD_SECS);
        // Exactly once per (milestone, admin).
        let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
        for m in &mails {
            *seen.entry((kind_of(m), rcpt(m))).or_default() += 1;
        }
        for kind in kinds {
            for (admin, _) in admins.iter() {
                assert_eq!(
                    seen.get(&(kind.to_string(), admin.to_string())),
                    Some(&1),
                    "{tenant}: {kind} to {admin} exactly once: {seen:?}"
                );
            }
        }
        // Each Message-ID is the stable one, derived from tenant, milestone and recipient, and
        // is the one the outbox recorded.
        let ids: BTreeSet<&str> = mails.iter().map(|m| field(m, "message_id")).collect();
        assert_eq!(ids.len(), 8, "{tenant}: one Message-ID per message");
        for m in &mails {
            let want = delivery_id(
                tenant,
                field(m, "milestone"),
                &Recipient::email(&rcpt(m)),
                "ops.example",
            );
            assert_eq!(field(m, "message_id"), want, "{tenant}: {m:#?}");
            let entry = tn
                .notifications
                .iter()
                .find(|e| e.milestone == field(m, "milestone") && e.recipient == rcpt(m))
                .unwrap_or_else(|| panic!("{tenant}: no outbox entry for {m:#?}"));
            assert_eq!(entry.delivery_id.as_deref(), Some(want.as_str()));
            assert_eq!(field(m, "from"), "Licensing <licensing@ops.example>");
            assert_eq!(field(m, "reply_to"), "support@ops.example");
            assert_eq!(field(m, "auto_submitted"), "auto-generated");
            assert_eq!(field(m, "content_type"), "text/plain");
            assert_eq!(field(m, "charset"), "utf-8");
        }
        // The outbox: every entry delivered once, on the first attempt.
        assert_eq!(
            tn.notifications.len(),
            12,
            "{tenant}: 4 milestones x (2 admins + webhook)"
        );
        for e in &tn.notifications {
            assert_eq!(e.state, NotificationState::Delivered, "{e:#?}");
            assert!(
                e.attempts >= 1 && e.delivered_at.is_some() && e.last_error.is_none(),
                "{e:#?}"
            );
            assert!(!e.late, "{e:#?}");
        }

        // What the mails say.
        let mail = |kind: &str, admin: &str| -> (String, String) {
            let m = mails
                .iter()
                .find(|m| kind_of(m) == kind && rcpt(m) == admin)
                .unwrap_or_else(|| panic!("{kind} to {admin}"));
            (
                field(m, "subject").to_string(),
                field(m, "body").replace("\r\n", "\n"),
            )
        };
        let sub = format!("{tenant}-esg");
        let (d_end, d_susp, d_renewed) = (
            format_date(locale, end),
            format_date(locale, suspend),
            format_date(locale, renewed_end),
        );
        let (first, second) = (admins[0].0, admins[1].0);
        match locale {
            Locale::En => {
                assert!(d_end.ends_with(" UTC"), "{d_end}");
                let (s, b) = mail("ExpiringSoon", first);
                assert_eq!(
                    s,
                    format!("[Action required] Email Safeguard for Globex Corp ends on {d_end}")
                );
                assert!(b.starts_with("Hello Alice,\n"), "{b}");
                assert!(b.contains(&format!("Subscription {sub} for Email Safeguard of tenant Globex Corp ({tenant}) ends on {d_end}.")), "{b}");
                assert!(
                    b.contains(&format!(
                        "What to do: Renew subscription {sub} before {d_end}"
                    )),
                    "{b}"
                );
                let (s, b) = mail("ReadOnly", second);
                assert_eq!(
                    s,
                    format!(
                        "[Action required] Email Safeguard for Globex Corp is read-only since {d_end}"
                    )
                );
                assert!(b.starts_with("Hello,\n"), "{b}");
                assert!(
                    b.contains(&format!(
                        "What to do: Renew subscription {sub} before {d_susp}."
                    )),
                    "{b}"
                );
                let (s, b) = mail("Suspended", first);
                assert_eq!(
                    s,
                    "[Action required] Email Safeguard for Globex Corp is suspended"
                );
                assert!(
                    b.contains(&format!("ended on {d_susp}"))
                        && b.contains("No data and no settings are lost"),
                    "{b}"
                );
                let (s, b) = mail("Renewed", second);
                assert_eq!(s, "Email Safeguard for Globex Corp is active again");
                assert!(
                    b.contains(&format!(
                        "covered again by subscription {tenant}-esg-renewal, until {d_renewed}"
                    )),
                    "{b}"
                );
            }
            Locale::Ja => {
                assert!(d_end.ends_with(" (UTC)") && d_end.contains('年'), "{d_end}");
                let (s, b) = mail("ExpiringSoon", first);
                assert_eq!(
                    s,
                    format!(
                        "【要対応】グローバル株式会社: Email Safeguard のサブスクリプションは {d_end} に有効期限を迎えます"
                    )
                );
                assert!(b.starts_with("情報システム部 様\n"), "{b}");
                assert!(b.contains(&format!("テナント「グローバル株式会社」({tenant}) の Email Safeguard のサブスクリプション {sub} は {d_end} に有効期限を迎えます。")), "{b}");
                assert!(
                    b.contains(&format!(
                        "必要な対応: {d_end} までにサブスクリプション {sub} を更新してください"
                    )),
                    "{b}"
                );
                let (s, b) = mail("ReadOnly", second);
                assert_eq!(
                    s,
                    format!(
                        "【要対応】グローバル株式会社: Email Safeguard は {d_end} から読み取り専用です"
                    )
                );
                assert!(b.starts_with("ご担当者様\n"), "{b}");
                assert!(
                    b.contains(&format!(
                        "必要な対応: {d_susp} までにサブスクリプション {sub} を更新してください。"
                    )),
                    "{b}"
                );
                let (s, b) = mail("Suspended", first);
                assert_eq!(
                    s,
                    "【要対応】グローバル株式会社: Email Safeguard は停止されました"
                );
                assert!(b.contains("データや設定が失われることはありません"), "{b}");
                let (s, b) = mail("Renewed", second);
                assert_eq!(
                    s,
                    "グローバル株式会社: Email Safeguard は再び有効になりました"
                );
                assert!(
                    b.contains(&format!(
                        "サブスクリプション {tenant}-esg-renewal により {d_renewed} まで有効"
                    )),
                    "{b}"
                );
            }
        }

        // The webhook: one signed call per milestone, verified by the receiver.
        let hooks = hooks_of(h, tenant);
        assert_eq!(hooks.len(), 4, "{tenant}: {hooks:#?}");
        for r in &hooks {
            assert_eq!(r["signature_ok"], true, "signature verifies: {r:#?}");
            assert_eq!(r["fresh"], true, "timestamp within 5 minutes: {r:#?}");
            assert!(field(r, "signature").starts_with("sha256="), "{r:#?}");
            assert!(field(r, "timestamp").parse::<i64>().is_ok(), "{r:#?}");
            assert_eq!(r["status"], 200);
            assert_eq!(field(r, "content_type"), "application/json");
            let body = &r["body"];
            assert_eq!(
                field(r, "delivery"),
                body["deliveryId"].as_str().unwrap_or_default()
            );
            assert_eq!(body["kind"], "MilestoneNotification");
            assert_eq!(
                body["tenant"]["locale"],
                if locale == Locale::Ja { "ja" } else { "en" }
            );
            assert_eq!(body["milestone"]["product"], ESG);
            assert_eq!(body["admins"].as_array().map(Vec::len), Some(2));
            assert!(!field(body, "hint").is_empty() && !field(body, "subject").is_empty());
        }
        let kinds_called: BTreeSet<&str> = hooks.iter().map(|r| field(r, "kind")).collect();
        assert_eq!(kinds_called, kinds.into_iter().collect());
        let expiring = hooks
            .iter()
            .find(|r| field(r, "kind") == "ExpiringSoon")
            .expect("ExpiringSoon call");
        assert_eq!(expiring["body"]["nextStep"]["kind"], "ReadOnly");
        assert_eq!(
            expiring["body"]["nextStep"]["at"]
                .as_str()
                .and_then(|s| s.parse::<DateTime<Utc>>().ok()),
            Some(end)
        );
        assert_eq!(expiring["body"]["milestone"]["subscription"], sub.as_str());

        // Two writers of one status, each owning its fields.
        let t: Tenant = Api::all(client.clone()).get(tenant).await.expect("tenant");
        let managers: BTreeMap<String, String> = t
            .metadata
            .managed_fields
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m.subresource.as_deref() == Some("status"))
            .map(|m| {
                (
                    m.manager.unwrap_or_default(),
                    m.fields_v1.map(|f| f.0.to_string()).unwrap_or_default(),
                )
            })
            .collect();
        let notifier = managers
            .get("mailsec-operator-notifier")
            .expect("notifier manager");
        let controller = managers
            .get("mailsec-operator")
            .expect("controller manager");
        assert!(
            notifier.contains("f:notifications") && !notifier.contains("f:milestones"),
            "{notifier}"
        );
        assert!(
            controller.contains("f:milestones") && !controller.contains("f:notifications"),
            "{controller}"
        );
    }
    // How long after its milestone was due each e-mail reached the server.
    let mut delays: Vec<f64> = Vec::new();
    for tenant in [&en, &ja] {
        let status = tenant_status(&client, tenant).await;
        for m in mails_of(h, tenant) {
            let due = status
                .milestones
                .iter()
                .find(|r| r.id == field(&m, "milestone"))
                .map(|r| r.due_at.timestamp_millis() as f64 / 1000.0);
            if let (Some(due), Some(at)) = (due, m["received_at"].as_f64()) {
                delays.push(at - due);
            }
        }
    }
    delays.sort_by(f64::total_cmp);
    eprintln!(
        "e-mail delivery after the milestone was due: median {:.3} s, max {:.3} s over {} mails",
        delays.get(delays.len() / 2).copied().unwrap_or_default(),
        delays.last().copied().unwrap_or_default(),
        delays.len()
    );
    let after = h.stats.snapshot();
    assert!(
        after.emails_delivered - before.emails_delivered >= 16,
        "{after:?}"
    );
    assert!(
        after.webhooks_delivered - before.webhooks_delivered >= 8,
        "{after:?}"
    );
    // Converged: nobody writes any more (the two writers do not fight over the status).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(h.writes.writes() - writes_before, 0, "writes at rest");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_smtp_outage_ends_in_delivery_once_and_a_failing_webhook_is_retried() {
    let _turn = SERIAL.lock().await;
    let h = harness();
    h.ensure_up();
    let client = cluster().client().await;
    // The SMTP server goes down; the webhook answers 503 to its next 2 calls about this tenant
    // (fewer than the 3 attempts after which an entry is marked Failed; calls still pending for
    // other tests' tenants do not count).
    let t = unique_name("outage");
    h.mail.lock().unwrap_or_else(|p| p.into_inner()).stop();
    {
        let mut hook = h.hook.lock().unwrap_or_else(|p| p.into_inner());
        hook.stop();
        *hook = Sink::webhook(
            h.hook_port,
            &h.base.join(format!("hook-{}", unique_name("x"))),
            SECRET,
            &["--fail-first", "2", "--fail-tenant", &t],
        );
    }
    let admins = [("one@initech.example", None), ("two@initech.example", None)];
    let before = h.stats.snapshot();
    let end = in_secs(4);
    create_subscription(&client, &format!("{t}-esg"), &t, ESG, end, 50).await;
    create_tenant_with(&client, &t, "Initech", Locale::En, &admins).await;
    wait_phase(&client, &t, TenantPhase::Suspended, WAIT).await;

    // While the server is down, the e-mails of all three milestones are tried, fail, and are
    // marked Failed (after 3 attempts) with the error, each announced once by an Event.
    let failed = wait_tenant(&client, &t, WAIT, "6 failed e-mails", |tn| {
        tn.status.as_ref().is_some_and(|s| {
            s.notifications
                .iter()
                .filter(|e| e.channel == NotificationChannel::Email)
                .filter(|e| e.state == NotificationState::Failed)
                .count()
                == 6
        })
    })
    .await;
    let tn = tenant_status(&client, &t).await;
    for e in tn
        .notifications
        .iter()
        .filter(|e| e.channel == NotificationChannel::Email)
    {
        assert!(e.attempts >= 3, "{e:#?}");
        let err = e.last_error.as_deref().unwrap_or_default();
        assert!(err.contains("SMTP"), "{e:#?}");
        assert!(
            e.next_attempt_at
                .is_some_and(|n| n > failed - TimeDelta::seconds(3)),
            "still retried: {e:#?}"
        );
    }
    assert!(mails_of(h, &t).is_empty());
    // Stay down a little longer: Failed entries keep being retried (at the 2 s cap).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events = events_about(&client, "Tenant", &t).await;
    let failures: Vec<&String> = events
        .iter()
        .filter(|(r, _)| r == "NotificationFailed")
        .map(|(_, n)| n)
        .collect();
    assert_eq!(
        failures.len(),
        6,
        "one NotificationFailed per entry: {failures:#?}"
    );
    assert!(
        failures.iter().all(|n| n.contains("(Email)")),
        "{failures:#?}"
    );
    for (admin, _) in admins {
        for kind in ["ExpiringSoon", "ReadOnly", "Suspended"] {
            assert_eq!(
                failures
                    .iter()
                    .filter(|n| n.contains(admin) && n.contains(&format!("{kind}/")))
                    .count(),
                1,
                "{kind} to {admin}: {failures:#?}"
            );
        }
    }

    // The server comes back on the same port: everything is delivered, once.
    let back = Sink::mail(
        h.smtp_port,
        &h.base.join(format!("mail-{}", unique_name("back"))),
        &[],
    );
    *h.mail.lock().unwrap_or_else(|p| p.into_inner()) = back;
    wait_count("e-mails after the outage", 6, || mails_of(h, &t).len()).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mails = mails_of(h, &t);
    assert_eq!(mails.len(), 6, "delivered once each, none lost: {mails:#?}");
    let distinct: BTreeSet<(String, String)> =
        mails.iter().map(|m| (kind_of(m), rcpt(m))).collect();
    assert_eq!(distinct.len(), 6);
    let tn = tenant_status(&client, &t).await;
    for e in &tn.notifications {
        assert_eq!(e.state, NotificationState::Delivered, "{e:#?}");
        assert_eq!(e.last_error, None);
    }
    // No more NotificationFailed Events than before.
    assert_eq!(
        count_events(&client, "Tenant", &t, "NotificationFailed").await,
        6
    );

    // The webhook: 503 twice, then delivered; each delivery id answered 200 once.
    let hooks = hooks_of(h, &t);
    let ok: Vec<&Value> = hooks.iter().filter(|r| r["status"] == 200).collect();
    assert_eq!(ok.len(), 3, "{hooks:#?}");
    let ok_ids: BTreeSet<&str> = ok.iter().map(|r| field(r, "delivery")).collect();
    assert_eq!(ok_ids.len(), 3, "one success per milestone: {hooks:#?}");
    let refused: Vec<&Value> = hooks.iter().filter(|r| r["status"] == 503).collect();
    assert_eq!(refused.len(), 2, "{hooks:#?}");
    for r in &refused {
        assert!(
            ok_ids.contains(field(r, "delivery")),
            "a refused call was retried until it succeeded: {r:#?}"
        );
        assert_eq!(r["signature_ok"], true);
    }
    let after = h.stats.snapshot();
    assert!(after.marked_failed - before.marked_failed >= 6, "{after:?}");
    assert!(
        after.attempts_failed - before.attempts_failed >= 6 * 3 + 2,
        "{after:?}"
    );
}

async fn tenant_status(client: &kube::Client, name: &str) -> mailsec_operator::api::TenantStatus {
    tenant(client, name).await.status.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn milestones_already_due_at_first_sight_are_mailed_once_the_latest_marked_late() {
    let _turn = SERIAL.lock().await;
    let h = harness();
    h.ensure_up();
    let client = cluster().client().await;
    let t = unique_name("notify-late");
    let admin = "late@umbrella.example";
    // A subscription that ran out two hours ago, seen for the first time now (as when the
    // operator is installed on a running fleet): the three milestones are recorded at once,
    // late, and announced together; of the service only the latest (Suspended) is mailed.
    let end = in_secs(-7200);
    create_subscription(&client, &format!("{t}-esg"), &t, ESG, end, 50).await;
    create_tenant_with(&client, &t, "Umbrella", Locale::En, &[(admin, None)]).await;
    wait_phase(&client, &t, TenantPhase::Suspended, WAIT).await;
    wait_count("late e-mails", 1, || mails_of(h, &t).len()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mails = mails_of(h, &t);
    assert_eq!(mails.len(), 1, "{mails:#?}");
    assert_eq!(kind_of(&mails[0]), "Suspended");
    let records = tenant_status(&client, &t).await.milestones;
    assert_eq!(records.len(), 3, "{records:#?}");
    assert!(records.iter().all(|r| r.already_due), "{records:#?}");
    expect_events(&client, "Tenant", &t, "MilestonesAlreadyDue", 1).await;
    for m in &mails {
        let body = field(m, "body").replace("\r\n", "\n");
        assert!(
            body.contains("This notice is late: it was due on"),
            "{body}"
        );
    }
    let status = tenant_status(&client, &t).await;
    let email_entries: Vec<_> = status
        .notifications
        .iter()
        .filter(|e| e.channel == NotificationChannel::Email)
        .collect();
    assert_eq!(email_entries.len(), 1);
    assert!(
        email_entries
            .iter()
            .all(|e| e.late && e.state == NotificationState::Delivered),
        "{email_entries:#?}"
    );
    let late_calls = hooks_of(h, &t);
    assert!(
        late_calls
            .iter()
            .filter(|r| r["status"] == 200)
            .all(|r| r["body"]["milestone"]["late"] == true),
        "{late_calls:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transfer_is_confirmed_once_to_the_admins_of_both_tenants() {
    let _turn = SERIAL.lock().await;
    let h = harness();
    h.ensure_up();
    let client = cluster().client().await;
    let from = unique_name("xfer-from");
    let to = unique_name("xfer-to");
    // Each tenant keeps its own base subscription; an extra one moves from `from` to `to`.
    let far = in_secs(86_400 * 60);
    create_subscription(&client, &format!("{from}-own"), &from, ESG, far, 50).await;
    create_subscription(&client, &format!("{to}-own"), &to, ESG, far, 50).await;
    let moving = format!("{from}-extra");
    create_subscription(&client, &moving, &from, ESG, far, 50).await;
    create_tenant_with(
        &client,
        &from,
        "From Corp",
        Locale::En,
        &[("a@from.example", None)],
    )
    .await;
    create_tenant_with(
        &client,
        &to,
        "移行先株式会社",
        Locale::Ja,
        &[("b@to.example", None)],
    )
    .await;
    wait_phase(&client, &from, TenantPhase::Active, WAIT).await;
    wait_phase(&client, &to, TenantPhase::Active, WAIT).await;

    let subs: Api<mailsec_operator::api::Subscription> = Api::all(client.clone());
    subs.patch(
        &moving,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({"spec": {"tenantRef": to}})),
    )
    .await
    .expect("transfer");

    wait_count("transfer e-mails", 2, || {
        mails_of(h, &from).len() + mails_of(h, &to).len()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let out = mails_of(h, &from);
    let inn = mails_of(h, &to);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(inn.len(), 1, "{inn:#?}");
    assert_eq!(kind_of(&out[0]), "TransferredOut");
    assert_eq!(
        field(&out[0], "subject"),
        format!("Subscription {moving} (Email Safeguard) was transferred away from From Corp")
    );
    assert!(
        field(&out[0], "body").contains(&format!(
            "was transferred from tenant From Corp ({from}) to tenant {to} on"
        )),
        "{:#?}",
        out[0]
    );
    assert_eq!(kind_of(&inn[0]), "TransferredIn");
    assert_eq!(
        field(&inn[0], "subject"),
        format!("移行先株式会社: サブスクリプション {moving} (Email Safeguard) が転送されました")
    );
    assert!(
        field(&inn[0], "body").contains(&format!(
            "テナント {from} からテナント「移行先株式会社」({to}) へ転送されました"
        )),
        "{:#?}",
        inn[0]
    );
    // The Events stay those of the Subscription controller (no second Event per transfer).
    assert_eq!(
        count_events(&client, "Tenant", &to, "SubscriptionTransferredIn").await,
        1
    );
    assert_eq!(
        count_events(&client, "Tenant", &to, "TransferredIn").await,
        0
    );
    let hooks: Vec<String> = hooks_of(h, &to)
        .iter()
        .map(|r| field(r, "kind").to_string())
        .collect();
    assert_eq!(hooks, ["TransferredIn"]);
}

/// The claim before a send carries the resourceVersion the notifier read: a write on a stale
/// read is refused, so two notifiers (a leader hand-over) can not both claim one attempt.
#[tokio::test(flavor = "multi_thread")]
async fn a_claim_on_a_stale_read_is_refused() {
    use kube::ResourceExt;
    use mailsec_operator::notifications::record::{WriteError, patch_outbox};
    let client = cluster().client().await;
    let t = unique_name("claim");
    create_tenant_with(
        &client,
        &t,
        "Claim",
        Locale::En,
        &[("c@claim.example", None)],
    )
    .await;
    // Once the Tenant controller has written a status (the outbox lives in it).
    wait_tenant(&client, &t, WAIT, "a status", |tn| tn.status.is_some()).await;
    let api: Api<Tenant> = Api::all(client.clone());
    let read = api.get(&t).await.expect("read");
    let stale = read.resource_version().expect("resourceVersion");
    let stored = read.status.unwrap_or_default().notifications;
    api.patch(
        &t,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(
            serde_json::json!({"metadata": {"annotations": {"touched": "yes"}}}),
        ),
    )
    .await
    .expect("someone else writes");
    let mut entry = outbox_entry("ReadOnly/email-safeguard/x", "c@claim.example");
    entry.attempts = 1;
    entry.last_attempt_at = Some(Utc::now());
    let mut desired = stored.clone();
    desired.push(entry);
    match patch_outbox(&api, &t, &stored, &desired, Some(&stale)).await {
        Err(WriteError::Kube(kube::Error::Api(e))) => assert_eq!(e.code, 409, "{e:?}"),
        other => panic!("a claim on a stale read must be refused: {other:?}"),
    }
    let now = api.get(&t).await.expect("read").status.unwrap_or_default();
    assert_eq!(now.notifications, stored, "nothing was written");

    // An outcome written against a list that is not the one stored (here: an entry that is not
    // there) is refused by the `test` of the entry's id, whatever the resourceVersion.
    let mut wrong = now.notifications.clone();
    let mut ghost = outbox_entry("ReadOnly/email-safeguard/x", "ghost@claim.example");
    wrong.insert(0, ghost.clone());
    ghost.state = NotificationState::Delivered;
    let recorded = mailsec_operator::notifications::record::with_entry(&wrong, &ghost);
    match patch_outbox(&api, &t, &wrong, &recorded, None).await {
        Err(WriteError::Kube(kube::Error::Api(e))) => assert_eq!(e.code, 422, "{e:?}"),
        other => panic!("a write against another list must be refused: {other:?}"),
    }
    let after = api.get(&t).await.expect("read").status.unwrap_or_default();
    assert_eq!(
        after.notifications, now.notifications,
        "nothing was written"
    );
}

/// A pending outbox entry of `milestone` to `recipient` by e-mail.
fn outbox_entry(milestone: &str, recipient: &str) -> mailsec_operator::api::NotificationRecord {
    mailsec_operator::api::NotificationRecord::pending(
        format!("{milestone}/Email/{recipient}"),
        milestone,
        NotificationChannel::Email,
        recipient,
    )
}

/// The status fields each field manager owns, as the API server records them.
async fn status_managers(client: &kube::Client, name: &str) -> Vec<(String, String, String)> {
    let t: Tenant = Api::all(client.clone()).get(name).await.expect("tenant");
    t.metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.subresource.as_deref() == Some("status"))
        .map(|m| {
            (
                m.manager.unwrap_or_default(),
                m.operation.unwrap_or_default(),
                m.fields_v1.map(|f| f.0.to_string()).unwrap_or_default(),
            )
        })
        .collect()
}

/// An outbox written by server-side apply of the whole list (as the notifier wrote it before it
/// wrote JSON patches) is pruned by the notifier's patches: entries whose milestone is not
/// recorded go, none of them stays in any field manager's fields, and the Tenant controller
/// keeps owning the rest of the status.
#[tokio::test(flavor = "multi_thread")]
async fn entries_applied_by_an_earlier_notifier_are_pruned_cleanly() {
    use mailsec_operator::notifications::FIELD_MANAGER;
    let _turn = SERIAL.lock().await;
    let h = harness();
    h.ensure_up();
    let client = cluster().client().await;
    let t = unique_name("prune");
    create_subscription(
        &client,
        &format!("{t}-esg"),
        &t,
        ESG,
        in_secs(86_400 * 60),
        50,
    )
    .await;
    create_tenant_with(
        &client,
        &t,
        "Prune",
        Locale::En,
        &[("p@prune.example", None)],
    )
    .await;
    wait_phase(&client, &t, TenantPhase::Active, WAIT).await;
    let api: Api<Tenant> = Api::all(client.clone());
    let gone = "ReadOnly/email-safeguard/not-recorded";
    let mut delivered = outbox_entry(gone, "p@prune.example");
    delivered.state = NotificationState::Delivered;
    delivered.attempts = 1;
    delivered.delivered_at = Some(Utc::now());
    let pending = outbox_entry(gone, "q@prune.example");
    api.patch_status(
        &t,
        &kube::api::PatchParams::apply(FIELD_MANAGER).force(),
        &kube::api::Patch::Apply(serde_json::json!({
            "apiVersion": "mailsec.io/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": t},
            "status": {"notifications": [delivered, pending]},
        })),
    )
    .await
    .expect("the whole list applied");
    wait_tenant(&client, &t, WAIT, "the outbox pruned", |tn| {
        tn.status
            .as_ref()
            .is_some_and(|s| s.notifications.is_empty())
    })
    .await;
    let managers = status_managers(&client, &t).await;
    for (manager, _, fields) in &managers {
        assert!(
            !fields.contains("prune.example"),
            "{manager} still names a pruned entry: {fields}"
        );
    }
    assert!(
        managers
            .iter()
            .any(|(m, op, f)| m == "mailsec-operator" && op == "Apply" && f.contains("f:phase")),
        "{managers:#?}"
    );
    let status = tenant_status(&client, &t).await;
    assert_eq!(status.phase, Some(TenantPhase::Active), "{status:#?}");
    assert!(mails_of(h, &t).is_empty());
}

/// One milestone (a transfer in) delivered to 1, 16 and 64 admins and the webhook: each
/// notification arrives once, and the notifier's writes per delivery stay flat. Prints the
/// bytes, and what the whole-list server-side apply the notifier wrote before would have sent
/// for the same writes (docs/design/performance.md#outbox).
#[tokio::test(flavor = "multi_thread")]
async fn bytes_written_per_delivery_do_not_grow_with_the_admins() {
    use mailsec_operator::api::NotificationRecord;
    let _turn = SERIAL.lock().await;
    let h = harness();
    h.ensure_up();
    let client = cluster().client().await;
    let mut per_delivery = Vec::new();
    eprintln!(
        "admins | deliveries | notifier writes | bytes | bytes per delivery | whole-list apply: bytes | per delivery"
    );
    for admins in [1usize, 16, 64] {
        let from = unique_name("bytes-from");
        let to = unique_name("bytes-to");
        let far = in_secs(86_400 * 60);
        create_subscription(&client, &format!("{from}-own"), &from, ESG, far, 50).await;
        create_subscription(&client, &format!("{to}-own"), &to, ESG, far, 50).await;
        let moving = format!("{from}-extra");
        create_subscription(&client, &moving, &from, ESG, far, 50).await;
        let addresses: Vec<String> = (0..admins)
            .map(|i| format!("admin{i:02}@to.example"))
            .collect();
        let to_admins: Vec<(&str, Option<&str>)> =
            addresses.iter().map(|a| (a.as_str(), None)).collect();
        create_tenant_with(
            &client,
            &from,
            "From",
            Locale::En,
            &[("a@from.example", None)],
        )
        .await;
        create_tenant_with(&client, &to, "To", Locale::En, &to_admins).await;
        wait_phase(&client, &from, TenantPhase::Active, WAIT).await;
        wait_phase(&client, &to, TenantPhase::Active, WAIT).await;
        let sent_before = h.writes.sent_writes().len();

        let subs: Api<mailsec_operator::api::Subscription> = Api::all(client.clone());
        subs.patch(
            &moving,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"tenantRef": to}})),
        )
        .await
        .expect("transfer");
        let deliveries = admins + 1;
        wait_tenant(&client, &to, WAIT, "every entry delivered", |tn| {
            tn.status.as_ref().is_some_and(|s| {
                s.notifications.len() == deliveries
                    && s.notifications
                        .iter()
                        .all(|e| e.state == NotificationState::Delivered)
            })
        })
        .await;
        wait_count("e-mails", admins, || mails_of(h, &to).len()).await;

        // Delivered once each.
        let mails = mails_of(h, &to);
        let rcpts: BTreeSet<String> = mails.iter().map(rcpt).collect();
        assert_eq!(mails.len(), admins, "{mails:#?}");
        assert_eq!(rcpts, addresses.iter().cloned().collect());
        assert!(mails.iter().all(|m| kind_of(m) == "TransferredIn"));
        let ok_hooks = hooks_of(h, &to)
            .iter()
            .filter(|r| r["status"] == 200)
            .count();
        assert_eq!(ok_hooks, 1);
        let read = tenant(&client, &to).await;
        let stored = read.status.clone().unwrap_or_default().notifications;
        assert!(stored.iter().all(|e| e.attempts == 1), "{stored:#?}");

        // The notifier's writes of this tenant's status.
        let path = format!("/tenants/{to}/status");
        let writes: Vec<u64> = h.writes.sent_writes()[sent_before..]
            .iter()
            .filter(|w| w.path.ends_with(&path))
            .filter(|w| w.query.contains("fieldManager=mailsec-operator-notifier"))
            .map(|w| w.body_bytes)
            .collect();
        let bytes: u64 = writes.iter().sum();

        // The same writes as the whole-list apply: the claim of every entry, then the list
        // again after each outcome.
        let apply_bytes = |entries: &[NotificationRecord], rv: Option<&str>| -> u64 {
            let mut body = serde_json::json!({
                "apiVersion": "mailsec.io/v1alpha1",
                "kind": "Tenant",
                "metadata": { "name": to },
                "status": { "notifications": entries },
            });
            if let Some(rv) = rv {
                body["metadata"]["resourceVersion"] = serde_json::json!(rv);
            }
            serde_json::to_vec(&body)
                .map(|b| b.len() as u64)
                .unwrap_or_default()
        };
        let mut list: Vec<NotificationRecord> = stored
            .iter()
            .map(|e| NotificationRecord {
                state: NotificationState::Pending,
                delivered_at: None,
                next_attempt_at: e.last_attempt_at.map(|t| t + TimeDelta::milliseconds(500)),
                ..e.clone()
            })
            .collect();
        let rv = kube::ResourceExt::resource_version(&read).unwrap_or_default();
        let mut apply_total = apply_bytes(&list, Some(&rv));
        for (i, e) in stored.iter().enumerate() {
            list[i] = e.clone();
            apply_total += apply_bytes(&list, None);
        }

        let per = bytes as f64 / deliveries as f64;
        eprintln!(
            "{admins} | {deliveries} | {} | {bytes} | {per:.0} | {apply_total} | {:.0}",
            writes.len(),
            apply_total as f64 / deliveries as f64
        );
        assert!(
            writes.len() > deliveries,
            "a claim and one record per delivery: {writes:?}"
        );
        per_delivery.push(per);
    }
    assert!(
        per_delivery[2] <= 1.5 * per_delivery[0],
        "bytes per delivery at 64 admins {:.0} against {:.0} at 1",
        per_delivery[2],
        per_delivery[0]
    );
}

/// The webhook signature covers a timestamp: a receiver that checks it as docs/guide/notifications.md says
/// (the test sink does) accepts a fresh call once, and rejects the same request replayed (409)
/// and one captured earlier (a timestamp older than 5 minutes: 401), as well as a wrong secret.
#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_or_stale_webhook_call_is_rejected_by_the_receiver() {
    use mailsec_operator::notifications::webhook::{Payload, PayloadMilestone, PayloadTenant};
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let _sink = Sink::webhook(port, dir.path(), SECRET, &[]);
    let url = format!("http://127.0.0.1:{port}/hook");
    let hook =
        Webhook::new(&url, SECRET.as_bytes().to_vec(), Duration::from_secs(5)).expect("webhook");
    let now = Utc::now();
    let payload = Payload {
        api_version: "mailsec.io/v1alpha1",
        kind: "MilestoneNotification",
        delivery_id: "mailsec.replay-test".into(),
        tenant: PayloadTenant {
            name: "replay".into(),
            display_name: "Replay Corp".into(),
            locale: Locale::En,
        },
        milestone: PayloadMilestone {
            id: "ReadOnly/email-safeguard/2027-01-01T00:00:00Z".into(),
            kind: "ReadOnly".into(),
            product: ESG.into(),
            product_name: "Email Safeguard".into(),
            base: true,
            subscription: Some("replay-esg".into()),
            due_at: now,
            announced_at: now,
            late: false,
            effective_end_at: None,
            suspends_at: None,
        },
        next_step: None,
        hint: String::new(),
        subject: "s".into(),
        text: "t".into(),
        admins: vec!["a@replay.example".into()],
    };
    let ts = now.timestamp();
    hook.send_at(&payload, ts).await.expect("a fresh call");
    let replayed = hook.send_at(&payload, ts).await;
    assert!(replayed.is_err(), "the same request again: {replayed:?}");
    let captured = hook.send_at(&payload, ts - 600).await;
    assert!(
        captured.is_err(),
        "a request from 10 minutes ago: {captured:?}"
    );
    let forged = Webhook::new(&url, b"not-the-secret".to_vec(), Duration::from_secs(5))
        .expect("webhook")
        .send_at(&payload, ts)
        .await;
    assert!(forged.is_err(), "signed with another secret: {forged:?}");
    // A retry is signed anew (another timestamp): accepted.
    hook.send_at(&payload, ts + 1).await.expect("a retry");

    let got: Vec<(i64, Option<String>)> = read_records(dir.path())
        .iter()
        .map(|r| {
            (
                r["status"].as_i64().unwrap_or_default(),
                r["rejected"].as_str().map(str::to_string),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (200, None),
            (409, Some("replay".into())),
            (401, Some("stale timestamp".into())),
            (401, Some("signature".into())),
            (200, None),
        ]
    );
}
