//! `mailsec-operator report`: the "service subscriptions" report (start date, end date,
//! status of every subscription, plus effective end, days left, seats and sharing), from
//! manifests and from the cluster.

mod common;

use std::process::{Command, Output};

use common::{cluster, describe, kubectl, repo_dir};
use serde_json::Value;

fn report(args: &[&str], kubeconfig: Option<&std::path::Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailsec-operator"));
    cmd.arg("report").args(args).current_dir(repo_dir());
    match kubeconfig {
        Some(k) => cmd.env("KUBECONFIG", k),
        None => cmd.env("KUBECONFIG", "/nonexistent"),
    };
    cmd.output().expect("run mailsec-operator report")
}

fn csv_rows(text: &str) -> Vec<Vec<String>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes());
    reader
        .records()
        .map(|r| r.expect("RFC 4180 CSV").iter().map(String::from).collect())
        .collect()
}

#[test]
fn csv_report_of_the_examples_has_the_seeds_columns() {
    let out = report(
        &["-o", "csv", "-f", "examples/", "--at", "2026-12-15"],
        None,
    );
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let rows = csv_rows(&text);
    assert_eq!(
        rows[0],
        [
            "subscription",
            "tenant",
            "product",
            "plan",
            "start_date",
            "end_date",
            "effective_end",
            "status",
            "days_left",
            "seats_used",
            "seats_licensed",
            "shared_with",
            "notes"
        ]
    );
    let manifests =
        mailsec_operator::manifests::read_paths(&[repo_dir().join("examples")]).expect("examples");
    assert_eq!(
        rows.len() - 1,
        manifests.world.subscriptions.len(),
        "{text}"
    );
    let row = |name: &str| -> Vec<String> {
        rows.iter()
            .find(|r| r[0] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
    };
    // Ends 2026-12-31 (end of day): warned from 2026-12-02, 17 days left on 2026-12-15.
    assert_eq!(
        row("globex-esg-2026"),
        [
            "globex-esg-2026",
            "globex",
            "email-safeguard",
            "Paid",
            "2026-01-01",
            "2026-12-31",
            "2026-12-31",
            "ExpiringSoon",
            "17",
            "120",
            "150",
            "",
            ""
        ]
    );
    // A temporary extension: the effective end is the extension's.
    let c = row("cyberdyne-esg-2026");
    assert_eq!(
        (c[5].as_str(), c[6].as_str(), c[7].as_str(), c[8].as_str()),
        ("2026-12-10", "2027-01-31", "Active", "48")
    );
    // In its read-only grace period, ended 14 days ago.
    let i = row("initech-esg-2025");
    assert_eq!((i[7].as_str(), i[8].as_str()), ("GracePeriod", "-14"));
    // Past the grace period; its renewal is in force.
    assert_eq!(row("soylent-esg-2025")[7], "Expired");
    assert_eq!(row("soylent-esg-2026")[7], "Active");
    // A trial, and a subscription shared after a merger over its licensed seats.
    assert_eq!(row("piedpiper-esg-trial")[3], "Trial");
    let w = row("wayne-esg-2026");
    assert_eq!(
        (
            w[9].as_str(),
            w[10].as_str(),
            w[11].as_str(),
            w[12].as_str()
        ),
        ("550", "500", "stark", "SeatLimitExceeded")
    );
    // The tenant that holds the renewal shares its administrator with another one: noted on its
    // subscriptions (the merged tenants share theirs on purpose and are not).
    assert_eq!(
        row("soylent-esg-2026")[12],
        "tenant soylent: possible duplicate of soylent-new"
    );
    // Sorted by tenant, then product.
    let tenants: Vec<&str> = rows[1..].iter().map(|r| r[1].as_str()).collect();
    let mut sorted = tenants.clone();
    sorted.sort();
    assert_eq!(tenants, sorted);
}

#[test]
fn table_and_json_reports() {
    let out = report(&["-f", "examples/", "--at", "2026-12-15"], None);
    assert!(out.status.success(), "{}", describe(&out));
    let table = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        table.starts_with("# service subscriptions at 2026-12-15T00:00:00Z\n"),
        "{table}"
    );
    assert!(
        table.contains("SUBSCRIPTION") && table.contains("DAYS LEFT"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("wayne-esg-2026") && l.contains("550/500")),
        "{table}"
    );

    let out = report(
        &["-o", "json", "-f", "examples/", "--at", "2026-12-15"],
        None,
    );
    assert!(out.status.success(), "{}", describe(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["at"], "2026-12-15T00:00:00Z");
    let globex = doc["subscriptions"]
        .as_array()
        .expect("subscriptions")
        .iter()
        .find(|s| s["subscription"] == "globex-esg-2026")
        .expect("globex");
    assert_eq!(globex["effectiveEndAt"], "2027-01-01T00:00:00Z");
    assert_eq!(globex["graceEndsAt"], "2027-01-31T00:00:00Z");
    assert_eq!(globex["daysLeft"], 17);

    let out = report(&["-f", "no/such/dir"], None);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}

#[test]
fn report_from_the_cluster_matches_the_manifests() {
    if cluster().is_external() {
        eprintln!("skipped on an external cluster: it applies examples/ with their fixed names");
        return;
    }
    let out = kubectl(&[
        "apply",
        "--server-side",
        "-f",
        repo_dir().join("examples").to_str().expect("path"),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let from_cluster = report(
        &["-o", "csv", "--at", "2026-12-15"],
        Some(cluster().kubeconfig()),
    );
    assert!(from_cluster.status.success(), "{}", describe(&from_cluster));
    let from_files = report(
        &["-o", "csv", "-f", "examples/", "--at", "2026-12-15"],
        None,
    );
    // Other tests of this binary add no subscriptions, so the cluster holds exactly the examples.
    assert_eq!(
        String::from_utf8_lossy(&from_cluster.stdout),
        String::from_utf8_lossy(&from_files.stdout)
    );
    // Without a reachable cluster: a clear error, exit code 1.
    let out = report(&["-o", "csv"], None);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("error:"),
        "{}",
        describe(&out)
    );
}
