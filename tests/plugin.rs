//! The `kubectl mailsec` plugin (`kubectl-mailsec`) against a real API server and a running
//! operator: `status` of tenants and subscriptions in every phase (with exit codes, the covering
//! subscription, days left, undelivered notifications and Events), `check` failing for what is
//! missing and passing once it is there, `what-if` and `report` from the cluster in every
//! format, completion, versions, kubeconfig flags and kubectl's plugin discovery.
//!
//! One operator runs for the whole test binary, with a 1 h warning and grace period (so each
//! phase lasts long enough to look at) and an SMTP server that refuses connections (so
//! notifications stay undelivered).

mod common;

use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use common::operator::{
    create, create_subscription, create_tenant, events_about, rfc3339, smtp_args, wait_phase,
    wait_tenant,
};
use common::{cluster, describe, kubectl, kubectl_stdin, repo_dir, unique_name};
use mailsec_operator::api::{NotificationState, TenantPhase};
use mailsec_operator::fixtures::{self, ESG as BASE};
use serde_json::Value;

const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-mailsec");
/// The operator's warning and grace periods.
const PERIOD: &str = "1h";

/// The Lease the operator of this binary holds (namespace `default`).
fn lease_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| unique_name("plugin-lease"))
}

/// Starts the operator once for the test binary: leader election on [`lease_name`], 1 h
/// periods, notifications to a closed SMTP port. It is killed when the test process exits
/// (PR_SET_PDEATHSIG of the thread that started it, which waits for it as long as it runs).
fn operator() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let closed_port = common::free_port();
        let mut args: Vec<String> = [
            "run",
            "--warning-period",
            PERIOD,
            "--grace-period",
            PERIOD,
            "--log-format",
            "text",
            "--metrics-addr",
            "127.0.0.1:0",
            "--leader-election",
            "--lease-namespace",
            "default",
            "--lease-name",
            lease_name(),
            "--instance",
            "plugin-tests",
        ]
        .map(String::from)
        .to_vec();
        args.extend(smtp_args(closed_port));
        let kubeconfig = cluster().kubeconfig().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::os::unix::process::CommandExt;
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailsec-operator"));
            cmd.args(&args)
                .env("KUBECONFIG", kubeconfig)
                .stdin(Stdio::null())
                .stdout(Stdio::null());
            if std::env::var_os("RUST_LOG").is_none() {
                cmd.env("RUST_LOG", "warn").stderr(Stdio::null());
            }
            // SAFETY: prctl(2) only asks the kernel to SIGKILL the child when this thread ends.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            match cmd.spawn() {
                Ok(mut child) => {
                    let _ = tx.send(Ok(()));
                    let _ = child.wait();
                }
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("the operator thread answers")
            .expect("start the operator");
    });
}

/// Runs the plugin with `args` against the test cluster.
fn plugin(args: &[&str]) -> Output {
    Command::new(PLUGIN)
        .args(args)
        .env("KUBECONFIG", cluster().kubeconfig())
        .stdin(Stdio::null())
        .output()
        .expect("run kubectl-mailsec")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The line of `text` that starts (after indentation) with `prefix`.
fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find(|l| l.trim_start().starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{text}"))
}

/// A tenant using the base product, covered by one subscription ending at `end`.
async fn tenant_ending(
    client: &kube::Client,
    prefix: &str,
    end: DateTime<Utc>,
) -> (String, String) {
    let tenant = unique_name(prefix);
    let sub = format!("{tenant}-esg");
    create_tenant(client, &tenant, &[BASE], 10).await;
    create_subscription(client, &sub, &tenant, BASE, end, 50).await;
    (tenant, sub)
}

#[tokio::test(flavor = "multi_thread")]
async fn status_of_tenants_and_subscriptions_in_every_phase() {
    operator();
    let client = common::client().await;
    let now = Utc::now();

    // Active, covered by a subscription whose endDate is a calendar date.
    let active = unique_name("p-active");
    let active_sub = format!("{active}-esg");
    create_tenant(&client, &active, &[BASE], 10).await;
    create(
        &client,
        fixtures::subscription(&active_sub, &active, BASE, "2026-01-01", "2099-12-31", 50),
    )
    .await;
    // Warned: ends in 30 minutes (warning period 1 h).
    let (warned, warned_sub) =
        tenant_ending(&client, "p-warned", now + TimeDelta::minutes(30)).await;
    // Read-only: ended 30 minutes ago (grace period 1 h).
    let (read_only, read_only_sub) =
        tenant_ending(&client, "p-readonly", now - TimeDelta::minutes(30)).await;
    // Suspended: ended 2 hours ago.
    let (suspended, _) = tenant_ending(&client, "p-susp", now - TimeDelta::hours(2)).await;

    let wait = Duration::from_secs(30);
    wait_phase(&client, &active, TenantPhase::Active, wait).await;
    wait_phase(&client, &warned, TenantPhase::Warning, wait).await;
    wait_phase(&client, &read_only, TenantPhase::ReadOnly, wait).await;
    wait_phase(&client, &suspended, TenantPhase::Suspended, wait).await;

    // Active: exit code 0, the covering subscription, the end as the last day, days left.
    let out = plugin(&["status", "tenant", &active]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    assert!(line(&text, "Phase:").contains("Active"), "{text}");
    let covered = line(&text, "Covered by:");
    assert!(
        covered.contains(&format!("subscription {active_sub} (Paid)"))
            && covered.contains("until the end of 31 Dec 2099 (UTC)"),
        "{text}"
    );
    let end = DateTime::parse_from_rfc3339("2100-01-01T00:00:00Z")
        .expect("instant")
        .with_timezone(&Utc);
    let days = (end - Utc::now()).num_seconds().div_euclid(86_400);
    assert!(
        covered.ends_with(&format!(": {days} days left"))
            || covered.ends_with(&format!(": {} days left", days + 1)),
        "{days} days left: {text}"
    );
    assert!(
        line(&text, "Next:").contains("ExpiringSoon: the warning period starts"),
        "{text}"
    );
    assert!(text.contains("What to do: nothing"), "{text}");

    // Warning: exit code 1; next comes read-only, with what it does.
    let out = plugin(&["status", "tenant", &warned]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let text = stdout(&out);
    assert!(line(&text, "Phase:").contains("Warning"), "{text}");
    assert!(
        line(&text, "email-safeguard (base):").ends_with("ExpiringSoon"),
        "{text}"
    );
    assert!(
        line(&text, "Next:").contains("ReadOnly: the whole tenant becomes read-only"),
        "{text}"
    );
    assert!(
        text.contains(&format!("renew subscription {warned_sub}")),
        "the way out names the subscription to renew: {text}"
    );
    assert!(line(&text, "Warning ").contains("ExpiringSoon"), "{text}");

    // Read-only: exit code 3, the undelivered notification and the Event.
    wait_tenant(
        &client,
        &read_only,
        wait,
        "a failed delivery attempt",
        |t| {
            t.status.as_ref().is_some_and(|s| {
                s.notifications.iter().any(|n| {
                    n.milestone.starts_with("ReadOnly/")
                        && n.state != NotificationState::Delivered
                        && n.attempts > 0
                        // An attempt is counted when it starts; its error comes after it fails.
                        && n.last_error.is_some()
                })
            })
        },
    )
    .await;
    common::eventually_async(wait, || {
        let client = client.clone();
        let name = read_only.clone();
        async move {
            // On its own, or with the ExpiringSoon due (and late) when the operator first saw
            // the tenant, if it saw it with its subscription.
            events_about(&client, "Tenant", &name)
                .await
                .iter()
                .any(|(reason, note)| {
                    reason == "ReadOnly"
                        || (reason == "MilestonesAlreadyDue" && note.contains("ReadOnly since"))
                })
                .then_some(())
        }
    })
    .await
    .expect("a ReadOnly Event about the tenant");
    let out = plugin(&["status", "tenant", &read_only]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let text = stdout(&out);
    assert!(line(&text, "Phase:").contains("ReadOnly"), "{text}");
    assert!(
        line(&text, "Next:")
            .contains("Suspended: the tenant's filtering workloads are scaled to zero"),
        "{text}"
    );
    let covered = line(&text, "Covered by:");
    assert!(
        covered.contains(&read_only_sub)
            && covered.contains(": ended ")
            && covered.ends_with(" ago"),
        "{text}"
    );
    let notifications = text
        .split("Undelivered notifications (")
        .nth(1)
        .unwrap_or_else(|| panic!("no undelivered notifications listed:\n{text}"));
    let admin = format!("admin@{read_only}.example");
    assert!(
        notifications
            .lines()
            .any(|l| l.contains("ReadOnly/email-safeguard/")
                && l.contains("Email")
                && l.contains(&admin)
                && l.contains("Connection")),
        "{text}"
    );
    let events = text
        .split("Events (newest last")
        .nth(1)
        .unwrap_or_else(|| panic!("no Events listed:\n{text}"));
    assert!(
        events
            .lines()
            .any(|l| l.contains("Warning") && l.contains("ReadOnly") && l.contains(&read_only_sub)),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "renew subscription {read_only_sub} before suspension"
        )),
        "{text}"
    );

    // Suspended: exit code 4, nothing scheduled.
    let out = plugin(&["status", "tenant", &suspended]);
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    assert!(
        stdout(&out).contains("stays suspended until a subscription covers it again"),
        "{}",
        describe(&out)
    );

    // Not found: exit code 5.
    let out = plugin(&["status", "tenant", "no-such-tenant"]);
    assert_eq!(out.status.code(), Some(5), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{}",
        describe(&out)
    );

    // A subscription: its phase, days left, the tenant it covers and the way out.
    let out = plugin(&["status", "subscription", &warned_sub]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let text = stdout(&out);
    assert!(line(&text, "Phase:").contains("ExpiringSoon"), "{text}");
    assert_eq!(
        line(&text, "Days left:").trim(),
        "Days left:    0",
        "{text}"
    );
    assert!(
        line(&text, "Next change:").contains("GracePeriod: the licence ends"),
        "{text}"
    );
    let covers = line(&text, &warned);
    assert!(
        covers.contains("owner")
            && covers.contains("Warning")
            && covers.contains(&format!("{warned_sub} (this one)")),
        "{text}"
    );
    assert!(line(&text, "- Renew:").contains("spec.endDate"), "{text}");
    let out = plugin(&["status", "msub", &read_only_sub]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let out = plugin(&["status", "subscription", &active_sub]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        line(&stdout(&out), "Licence:").contains("until the end of 31 Dec 2099 (UTC)"),
        "{}",
        describe(&out)
    );

    // The same verb through the operator binary: one implementation, two entry points.
    let out = Command::new(env!("CARGO_BIN_EXE_mailsec-operator"))
        .args(["status", "tenant", &warned])
        .env("KUBECONFIG", cluster().kubeconfig())
        .output()
        .expect("run mailsec-operator status");
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn check_fails_for_what_is_missing_and_passes_once_installed() {
    if cluster().is_external() {
        eprintln!("skipped on an external cluster: it installs the read-only policy and Leases");
        return;
    }
    // Nothing but the CRDs: the policy and the Lease are missing.
    let nobody = unique_name("no-lease");
    let out = plugin(&[
        "check",
        "--lease-name",
        &nobody,
        "--lease-namespace",
        "default",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let text = stdout(&out);
    assert!(
        line(&text, "[ok]   CRD tenants.mailsec.io").contains("Established"),
        "{text}"
    );
    assert!(
        line(&text, "[ok]   CRD subscriptions.mailsec.io").contains("v1alpha1"),
        "{text}"
    );
    let policy = line(&text, "[FAIL] read-only policy:");
    assert!(
        policy.contains("mailsec-read-only-settings") && policy.contains("not enforced"),
        "{text}"
    );
    let lease = line(&text, "[FAIL] leader Lease:");
    assert!(
        lease.contains(&format!("default/{nobody} not found")),
        "{text}"
    );

    // A Lease whose holder stopped renewing an hour ago: no leader.
    let stale = unique_name("stale-lease");
    let renewed = Utc::now() - TimeDelta::hours(1);
    let lease_doc = serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": stale, "namespace": "default"},
        "spec": {
            "holderIdentity": "mailsec-operator-6d9f-abcdef12",
            "leaseDurationSeconds": 15,
            "renewTime": renewed.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        }
    });
    let out = kubectl_stdin(&["apply", "-f", "-"], &lease_doc.to_string());
    assert!(out.status.success(), "{}", describe(&out));
    let out = plugin(&[
        "check",
        "--lease-name",
        &stale,
        "--lease-namespace",
        "default",
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["passed"], false);
    let lease = doc["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "leader Lease")
        .expect("a leader Lease check");
    assert_eq!(lease["result"], "Fail");
    assert!(
        lease["detail"]
            .as_str()
            .is_some_and(|d| d.contains("expired") && d.contains("stopped renewing")),
        "{lease}"
    );

    // Install the policy and run the operator: every check passes.
    let policy_file = repo_dir().join("deploy/read-only-policy.yaml");
    let out = kubectl(&[
        "apply",
        "--server-side",
        "-f",
        policy_file.to_str().expect("path"),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    operator();
    let out = plugin(&[
        "check",
        "--lease-name",
        lease_name(),
        "--lease-namespace",
        "default",
        "--wait",
        "60s",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("All checks passed."), "{text}");
    assert!(
        line(&text, "[ok]   read-only policy binding:").contains("(Deny)"),
        "{text}"
    );
    let lease = line(&text, "[ok]   leader Lease:");
    assert!(
        lease.contains("held by plugin-tests-") && lease.contains("renewed"),
        "{text}"
    );
    // The operator runs as a process here, not in a pod: told, not failed.
    assert!(
        line(&text, "[warn] leader ready:").contains("not a pod"),
        "{text}"
    );
    assert!(
        line(&text, "[warn] versions:").contains(&format!("CLI {}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn what_if_at_a_future_date_shows_the_later_phase() {
    operator();
    let client = common::client().await;
    let now = Utc::now();
    let (tenant, sub) = tenant_ending(&client, "p-whatif", now + TimeDelta::minutes(30)).await;
    wait_phase(
        &client,
        &tenant,
        TenantPhase::Warning,
        Duration::from_secs(30),
    )
    .await;
    let policy = ["--warning-period", PERIOD, "--grace-period", PERIOD];

    let phase_at = |at: DateTime<Utc>| -> (String, String) {
        let at = rfc3339(at);
        let mut args = vec!["what-if", "--at", &at, "-o", "json"];
        args.extend(policy);
        let out = plugin(&args);
        assert!(out.status.success(), "{}", describe(&out));
        let list: Value = serde_json::from_slice(&out.stdout).expect("a JSON List");
        let phase = |kind: &str, name: &str| {
            list["items"]
                .as_array()
                .expect("items")
                .iter()
                .find(|i| i["kind"] == kind && i["metadata"]["name"] == name)
                .and_then(|i| i["status"]["phase"].as_str())
                .unwrap_or_else(|| panic!("{kind} {name} not in the output"))
                .to_string()
        };
        (phase("Tenant", &tenant), phase("Subscription", &sub))
    };
    assert_eq!(phase_at(now), ("Warning".into(), "ExpiringSoon".into()));
    assert_eq!(
        phase_at(now + TimeDelta::minutes(45)),
        ("ReadOnly".into(), "GracePeriod".into())
    );
    assert_eq!(
        phase_at(now + TimeDelta::hours(2)),
        ("Suspended".into(), "Expired".into())
    );

    // The table: now as stored, then as evaluated.
    let at = rfc3339(now + TimeDelta::hours(2));
    let mut args = vec!["what-if", "--at", &at];
    args.extend(policy);
    let out = plugin(&args);
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.starts_with("# what-if at "), "{text}");
    let row: Vec<&str> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.get(1) == Some(&tenant.as_str()))
        .unwrap_or_else(|| panic!("{tenant} not in:\n{text}"));
    assert_eq!(
        row[..4],
        ["Tenant", tenant.as_str(), "Warning", "Suspended"],
        "{text}"
    );

    // Only what changes, by name; CSV without headers.
    let mut args = vec!["what-if", "--at", &at, "--changed", "-o", "name"];
    args.extend(policy);
    let names = stdout(&plugin(&args));
    assert!(
        names
            .lines()
            .any(|l| l == format!("tenant.mailsec.io/{tenant}")),
        "{names}"
    );
    assert!(
        names
            .lines()
            .any(|l| l == format!("subscription.mailsec.io/{sub}")),
        "{names}"
    );
    let later = rfc3339(now + TimeDelta::seconds(5));
    let mut args = vec!["what-if", "--at", &later, "--changed", "-o", "name"];
    args.extend(policy);
    let names = stdout(&plugin(&args));
    assert!(
        !names.contains(&tenant),
        "nothing changes for it within seconds: {names}"
    );
    let mut args = vec!["what-if", "--at", &at, "-o", "csv", "--no-headers"];
    args.extend(policy);
    let csv = stdout(&plugin(&args));
    assert!(!csv.starts_with("kind,"), "{csv}");
    assert!(
        csv.lines().any(|l| l.starts_with(&format!(
            "Tenant,{tenant},Warning,Suspended,SubscriptionExpired,"
        ))),
        "{csv}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn report_from_the_cluster_in_every_format() {
    let client = common::client().await;
    let tenant = unique_name("p-report");
    let sub = format!("{tenant}-esg");
    create_tenant(&client, &tenant, &[BASE], 10).await;
    create(
        &client,
        fixtures::subscription(&sub, &tenant, BASE, "2026-01-01", "2026-12-31", 50),
    )
    .await;
    let at = ["--at", "2026-12-15"];

    let out = plugin(&[&["report", "-o", "wide"][..], &at].concat());
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("# service subscriptions at 2026-12-15T00:00:00Z\n"),
        "{text}"
    );
    assert!(text.contains("EFFECTIVE END AT"), "{text}");
    let row = line(&text, &sub);
    assert!(
        row.contains("ExpiringSoon")
            && row.contains("2027-01-01T00:00:00Z")
            && row.contains(" 17 "),
        "{text}"
    );

    let out = plugin(&[&["report", "--no-headers"][..], &at].concat());
    let text = stdout(&out);
    assert!(
        !text.contains("SUBSCRIPTION") && !text.starts_with('#'),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with(&sub)), "{text}");

    let out = plugin(&[&["report", "-o", "name"][..], &at].concat());
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l == format!("subscription.mailsec.io/{sub}")),
        "{}",
        describe(&out)
    );

    let out = plugin(&[&["report", "-o", "yaml"][..], &at].concat());
    let doc: Value = serde_yaml::from_slice(&out.stdout).expect("yaml");
    let entry = doc["subscriptions"]
        .as_array()
        .expect("subscriptions")
        .iter()
        .find(|s| s["subscription"] == sub.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("{sub} not in {doc}"));
    assert_eq!(entry["daysLeft"], 17);
    assert_eq!(entry["status"], "ExpiringSoon");

    let out = plugin(&[&["report", "-o", "csv", "--no-headers"][..], &at].concat());
    let csv = stdout(&out);
    assert!(!csv.starts_with("subscription,"), "{csv}");
    assert!(
        csv.lines()
            .any(|l| l.starts_with(&format!("{sub},{tenant},"))),
        "{csv}"
    );
}

#[test]
fn completion_scripts_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(PLUGIN)
            .args(["completion", shell])
            .output()
            .expect("run kubectl-mailsec completion");
        assert!(out.status.success(), "{shell}: {}", describe(&out));
        let script = stdout(&out);
        assert!(
            script.len() > 1000 && script.contains("kubectl-mailsec") && script.contains("what-if"),
            "{shell}: {script}"
        );
    }
    let out = Command::new(PLUGIN)
        .args(["completion", "tcsh"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}

/// The plugin's batch work over manifests runs on jemalloc; the operator, a long-running server,
/// keeps glibc's malloc (docs/design/performance.md). jemalloc prints its statistics at exit
/// when its options ask for it; glibc ignores the variable.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn the_plugin_allocates_with_jemalloc_and_the_operator_does_not() {
    let stats = |exe: &str| {
        let out = Command::new(exe)
            .args(["completion", "bash"])
            .env("_RJEM_MALLOC_CONF", "stats_print:true")
            .output()
            .expect("run completion");
        assert!(out.status.success(), "{exe}: {}", describe(&out));
        String::from_utf8_lossy(&out.stderr).contains("jemalloc statistics")
    };
    assert!(stats(PLUGIN), "kubectl-mailsec runs without jemalloc");
    assert!(
        !stats(env!("CARGO_BIN_EXE_mailsec-operator")),
        "mailsec-operator runs with jemalloc"
    );
}

#[test]
fn versions_kubeconfig_flags_and_kubectl_plugin_discovery() {
    let version = env!("CARGO_PKG_VERSION");
    let out = Command::new(PLUGIN)
        .args(["version", "--client"])
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        stdout(&out),
        format!("Client:     kubectl-mailsec {version}\n")
    );

    // --kubeconfig wins over $KUBECONFIG; the server's version, the operator's unknown here.
    let kubeconfig = cluster().kubeconfig().to_str().expect("path").to_string();
    let out = Command::new(PLUGIN)
        .args(["version", "--kubeconfig", &kubeconfig])
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    assert!(line(&text, "Kubernetes:").contains('v'), "{text}");
    assert!(line(&text, "Operator:").contains("unknown"), "{text}");

    // A context that does not exist: a clear error, exit code 6 (unknown) for status.
    let out = Command::new(PLUGIN)
        .args([
            "status",
            "tenant",
            "x",
            "--kubeconfig",
            &kubeconfig,
            "--context",
            "nowhere",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(6), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nowhere"),
        "{}",
        describe(&out)
    );
    // Impersonation is sent (the test server allows everyone, so the request goes through).
    let out = plugin(&[
        "status",
        "tenant",
        "no-such-tenant",
        "--as",
        "jane",
        "--as-group",
        "ops",
    ]);
    assert_eq!(out.status.code(), Some(5), "{}", describe(&out));

    // kubectl finds the plugin on PATH: `kubectl mailsec ...`.
    let dir = std::path::Path::new(PLUGIN).parent().expect("bin dir");
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // (kubectl only looks for a plugin when no flag comes before its name.)
    let out = Command::new("kubectl")
        .env("PATH", path)
        .env("KUBECONFIG", cluster().kubeconfig())
        .args(["mailsec", "version", "--client"])
        .output()
        .expect("run kubectl mailsec");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stdout(&out).contains(&format!("kubectl-mailsec {version}")),
        "{}",
        describe(&out)
    );
}
