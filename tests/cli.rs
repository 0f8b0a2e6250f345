//! The `evaluate` command as GitOps pipelines run it: what happens to the example tenants on a
//! given date, in every output format, and clear errors (exit code 2) on bad input.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn evaluate(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailsec-operator"))
        .arg("evaluate")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mailsec-operator evaluate");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("wait")
}

fn item<'a>(list: &'a Value, kind: &str, name: &str) -> &'a Value {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["kind"] == kind && i["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {name} not in the output"))
}

fn condition<'a>(obj: &'a Value, type_: &str) -> (&'a str, &'a str) {
    let c = obj["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition"));
    (
        c["status"].as_str().unwrap_or_default(),
        c["reason"].as_str().unwrap_or_default(),
    )
}

fn service_phase<'a>(obj: &'a Value, product: &str) -> &'a str {
    obj["status"]["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| s["product"] == product)
        .and_then(|s| s["phase"].as_str())
        .unwrap_or_else(|| panic!("no service {product}"))
}

#[test]
fn the_examples_on_2026_12_15() {
    let out = evaluate(
        &["--at", "2026-12-15", "-f", "examples/", "-o", "json"],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout).expect("a JSON List");
    assert_eq!(
        (list["apiVersion"].as_str(), list["kind"].as_str()),
        (Some("v1"), Some("List"))
    );
    assert_eq!(
        list["items"].as_array().map(Vec::len),
        Some(12 + 13),
        "every example object"
    );

    // (tenant, phase, Warning reason, ReadOnly, Suspended)
    let tenants = [
        (
            "acme",
            "Active",
            ("False", "SubscriptionsActive"),
            "False",
            "False",
        ),
        (
            "globex",
            "Warning",
            ("True", "ExpiringSoon"),
            "False",
            "False",
        ),
        (
            "initech",
            "ReadOnly",
            ("True", "SubscriptionExpired"),
            "True",
            "False",
        ),
        (
            "umbrella",
            "Suspended",
            ("True", "SubscriptionExpired"),
            "True",
            "True",
        ),
        (
            "hooli",
            "Warning",
            ("True", "SubscriptionExpired"),
            "False",
            "False",
        ),
        (
            "piedpiper",
            "Warning",
            ("True", "TrialLicense"),
            "False",
            "False",
        ),
        (
            "vandelay",
            "Warning",
            ("True", "SubscriptionMissing"),
            "False",
            "False",
        ),
        (
            "wayne",
            "Warning",
            ("True", "SeatLimitExceeded"),
            "False",
            "False",
        ),
        (
            "stark",
            "Warning",
            ("True", "SeatLimitExceeded"),
            "False",
            "False",
        ),
        (
            "soylent",
            "Active",
            ("False", "SubscriptionsActive"),
            "False",
            "False",
        ),
        (
            "cyberdyne",
            "Active",
            ("False", "SubscriptionsActive"),
            "False",
            "False",
        ),
    ];
    for (name, phase, warning, read_only, suspended) in tenants {
        let t = item(&list, "Tenant", name);
        assert_eq!(t["status"]["phase"], phase, "{name}");
        assert_eq!(condition(t, "Warning"), warning, "{name}");
        assert_eq!(condition(t, "ReadOnly").0, read_only, "{name}");
        assert_eq!(condition(t, "Suspended").0, suspended, "{name}");
        assert_eq!(condition(t, "Ready"), ("True", "Reconciled"), "{name}");
    }
    // Possible duplicates: the late renewal's two tenants share an administrator; the merged
    // tenants do too, but share a subscription on purpose.
    for (name, flagged, other) in [
        ("soylent", ("True", "SharesAdmins"), Some("soylent-new")),
        ("soylent-new", ("True", "SharesAdmins"), Some("soylent")),
        ("wayne", ("False", "NoDuplicate"), None),
        ("stark", ("False", "NoDuplicate"), None),
        ("acme", ("False", "NoDuplicate"), None),
    ] {
        let t = item(&list, "Tenant", name);
        assert_eq!(condition(t, "PossibleDuplicate"), flagged, "{name}");
        assert_eq!(
            t["status"]["possibleDuplicates"][0]["tenant"].as_str(),
            other,
            "{name}"
        );
    }
    let soylent = item(&list, "Tenant", "soylent");
    assert_eq!(
        soylent["status"]["possibleDuplicates"][0]["tenantInUse"],
        "soylent"
    );
    let hooli = item(&list, "Tenant", "hooli");
    assert_eq!(service_phase(hooli, "email-threat-isolation"), "ReadOnly");
    assert_eq!(service_phase(hooli, "email-safeguard"), "Active");
    assert_eq!(
        service_phase(
            item(&list, "Tenant", "vandelay"),
            "email-threat-detection-response"
        ),
        "ReadOnly"
    );
    assert_eq!(
        item(&list, "Tenant", "globex")["status"]["nextTransitionAt"],
        "2027-01-01T00:00:00Z"
    );

    let sub = |name: &str| item(&list, "Subscription", name);
    assert_eq!(sub("initech-esg-2025")["status"]["phase"], "GracePeriod");
    assert_eq!(
        sub("initech-esg-2025")["status"]["graceEndsAt"],
        "2026-12-31T00:00:00Z"
    );
    assert_eq!(sub("umbrella-esg-2025")["status"]["phase"], "Expired");
    assert_eq!(
        sub("cyberdyne-esg-2026")["status"]["effectiveEndAt"],
        "2027-02-01T00:00:00Z",
        "the extension moves the end"
    );
    assert_eq!(sub("wayne-esg-2026")["status"]["seatsUsed"], 550);
    assert_eq!(
        condition(sub("wayne-esg-2026"), "SeatLimitExceeded"),
        ("True", "SeatLimitExceeded")
    );
    assert_eq!(sub("piedpiper-esg-trial")["spec"]["plan"], "Trial");
    let transfer = &sub("soylent-esg-2026")["status"]["transfers"][0];
    assert_eq!(
        (transfer["from"].as_str(), transfer["to"].as_str()),
        (Some("soylent-new"), Some("soylent"))
    );
}

#[test]
fn yaml_table_and_stdin() {
    let out = evaluate(
        &[
            "--at",
            "2026-12-15T00:00:00Z",
            "-f",
            "examples/02-expiring-soon.yaml",
            "-o",
            "yaml",
        ],
        None,
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let docs: Vec<Value> = text
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_yaml::from_str(d).expect("yaml"))
        .collect();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0]["status"]["phase"], "Warning");

    let out = evaluate(&["--at", "2026-12-15", "-f", "examples/"], None);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.starts_with("# evaluated at 2026-12-15T00:00:00Z\nKIND"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("Tenant") && l.contains("umbrella") && l.contains("Suspended")),
        "{table}"
    );

    let manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/04-suspended.yaml"
    ))
    .expect("example");
    let out = evaluate(
        &[
            "--at",
            "2026-10-15",
            "-f",
            "-",
            "-o",
            "json",
            "--warning-period",
            "10d",
        ],
        Some(&manifest),
    );
    let list: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        item(&list, "Tenant", "umbrella")["status"]["phase"],
        "Active",
        "10 days of warning: not yet on 2026-10-15"
    );
}

#[test]
fn bad_input_exits_2_naming_the_file_and_document() {
    let bad = "apiVersion: mailsec.io/v1alpha1\nkind: Tenant\nmetadata: {name: a}\nspec: {}\n---\napiVersion: mailsec.io/v1alpha1\nkind: Subscription\nmetadata: {name: s}\nspec: {tenantRef: a, seats: many}\n";
    let out = evaluate(&["-f", "-"], Some(bad));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("<stdin>: document 2 (Subscription \"s\")"),
        "{err}"
    );

    let out = evaluate(&["-f", "no/such/dir"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no/such/dir"));

    let out = evaluate(&["--at", "next tuesday", "-f", "examples/"], None);
    assert_eq!(
        out.status.code(),
        Some(2),
        "clap usage errors exit with 2 as well"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither a date"));
}
