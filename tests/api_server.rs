//! The CRDs on a real API server (kube-apiserver + etcd, see `tests/common`): the examples
//! apply, invalid manifests are rejected at apply time with our messages, `kubectl explain`
//! shows the doc comments, printer columns, short names, the category and the status
//! subresource work, and the Rust types round-trip through the server unchanged.
//!
//! Set `MAILSEC_TEST_KUBECONFIG` to run these against an existing cluster (see `tests/common`).

mod common;

use std::time::Duration;

use common::{Cleanup, FIELD_MANAGER, cluster, describe, kubectl, kubectl_stdin, unique_name};
use kube::CustomResourceExt;
use kube::api::{Api, Patch, PatchParams};
use mailsec_operator::api::{Subscription, Tenant};
use serde::Deserialize;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Manifests

/// RFC 7386 JSON merge patch: objects merge recursively, `null` deletes, anything else replaces.
fn merge(base: &mut Value, patch: Value) {
    match patch {
        Value::Object(patch) => {
            if !base.is_object() {
                *base = json!({});
            }
            let base = base.as_object_mut().expect("base was just made an object");
            for (key, value) in patch {
                if value.is_null() {
                    base.remove(&key);
                } else {
                    merge(base.entry(key).or_insert(Value::Null), value);
                }
            }
        }
        other => *base = other,
    }
}

fn yaml(snippet: &str) -> Value {
    serde_yaml::from_str(snippet).unwrap_or_else(|e| panic!("bad YAML in test: {e}\n{snippet}"))
}

/// A valid Subscription named `name`, with `spec_patch` (YAML, merge-patch semantics) applied to
/// its spec.
fn subscription(name: &str, spec_patch: &str) -> Value {
    let mut spec = json!({
        "tenantRef": "acme",
        "product": "email-safeguard",
        "plan": "Paid",
        "startDate": "2026-01-01",
        "endDate": "2026-12-31",
        "seats": 10,
    });
    merge(&mut spec, yaml(spec_patch));
    json!({
        "apiVersion": "mailsec.io/v1alpha1",
        "kind": "Subscription",
        "metadata": {"name": name},
        "spec": spec,
    })
}

/// A valid Tenant named `name`, with `spec_patch` (YAML, merge-patch semantics) applied to its
/// spec.
fn tenant(name: &str, spec_patch: &str) -> Value {
    let mut spec = json!({
        "displayName": "ACME Corporation",
        "users": 5,
        "services": [{"product": "email-safeguard"}],
        "admins": [{"email": "it-admin@acme.example"}],
    });
    merge(&mut spec, yaml(spec_patch));
    json!({
        "apiVersion": "mailsec.io/v1alpha1",
        "kind": "Tenant",
        "metadata": {"name": name},
        "spec": spec,
    })
}

fn apply_args() -> Vec<String> {
    vec![
        "apply".into(),
        "--server-side".into(),
        format!("--field-manager={FIELD_MANAGER}"),
        "-f".into(),
        "-".into(),
    ]
}

/// `kubectl apply --server-side -f -` of one object.
fn apply(object: &Value) -> std::process::Output {
    let args = apply_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    kubectl_stdin(&args, &object.to_string())
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// All whitespace runs as one space: `kubectl explain` wraps long lines.
fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

// ---------------------------------------------------------------------------------------------
// (a) examples

#[tokio::test]
async fn every_example_applies() {
    let cluster = cluster();
    let dir = common::repo_dir().join("examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("list examples/").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "expected the ten examples, found {files:?}"
    );

    let client = cluster.client().await;
    let tenants: Api<Tenant> = Api::all(client.clone());
    let subscriptions: Api<Subscription> = Api::all(client);
    let mut failures = Vec::new();
    for file in &files {
        let path = file.to_str().expect("UTF-8 path");
        let manager = format!("--field-manager={FIELD_MANAGER}");
        let mut args = vec!["apply", "--server-side", &manager, "-f", path];
        // On somebody's cluster, don't create or overwrite objects named like the examples.
        if cluster.is_external() {
            args.push("--dry-run=server");
        }
        let out = kubectl(&args);
        if !out.status.success() {
            failures.push(format!("{path}: {}", describe(&out)));
            continue;
        }
        if cluster.is_external() {
            continue;
        }
        // The stored objects read back into the Rust types with the spec the file has.
        let text = std::fs::read_to_string(file).expect("read example");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = Value::deserialize(doc).expect("example is YAML");
            let name = value["metadata"]["name"].as_str().unwrap_or_default();
            let problem = match value["kind"].as_str() {
                Some("Tenant") => {
                    let want: Tenant = serde_json::from_value(value.clone())
                        .unwrap_or_else(|e| panic!("{path}: {name} is not a Tenant: {e}"));
                    match tenants.get(name).await {
                        Ok(got) if got.spec == want.spec => None,
                        Ok(got) => Some(format!("spec read back as {:?}", got.spec)),
                        Err(e) => Some(format!("typed get failed: {e}")),
                    }
                }
                Some("Subscription") => {
                    let want: Subscription = serde_json::from_value(value.clone())
                        .unwrap_or_else(|e| panic!("{path}: {name} is not a Subscription: {e}"));
                    match subscriptions.get(name).await {
                        Ok(got) if got.spec == want.spec => None,
                        Ok(got) => Some(format!("spec read back as {:?}", got.spec)),
                        Err(e) => Some(format!("typed get failed: {e}")),
                    }
                }
                other => Some(format!("unexpected kind {other:?}")),
            };
            if let Some(problem) = problem {
                failures.push(format!("{path}: {name}: {problem}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "examples that did not apply cleanly:\n{}",
        failures.join("\n\n")
    );
}

// ---------------------------------------------------------------------------------------------
// (b) invalid manifests

#[derive(Clone, Copy, Debug)]
enum Via {
    /// `kubectl apply --server-side` (what people and GitOps tools use).
    ServerSideApply,
    /// `kubectl create`: list-type violations surface as API validation errors here rather than
    /// as server-side-apply merge errors.
    Create,
}

struct Case {
    what: &'static str,
    via: Via,
    object: Value,
    /// Every one of these must appear in kubectl's stderr.
    expect: Vec<&'static str>,
}

fn sub_case(what: &'static str, spec_patch: &str, expect: &[&'static str]) -> Case {
    Case {
        what,
        via: Via::ServerSideApply,
        object: subscription(&unique_name("bad-sub"), spec_patch),
        expect: expect.to_vec(),
    }
}

fn tenant_case(what: &'static str, spec_patch: &str, expect: &[&'static str]) -> Case {
    Case {
        what,
        via: Via::ServerSideApply,
        object: tenant(&unique_name("bad-tenant"), spec_patch),
        expect: expect.to_vec(),
    }
}

impl Case {
    fn via(mut self, via: Via) -> Self {
        self.via = via;
        self
    }

    fn named(mut self, name: &str) -> Self {
        self.object["metadata"]["name"] = json!(name);
        self
    }
}

/// Every case the schema can catch, with the message a person sees.
fn invalid_cases() -> Vec<Case> {
    const END_AFTER_START: &[&str] = &["spec.endDate", "endDate must be after startDate"];
    const UNTIL_AFTER_END: &[&str] = &[
        "spec.extension.until",
        "extension.until must be after endDate: an extension can only lengthen a subscription",
    ];
    const START_DATE: &str =
        "startDate must be a real calendar date YYYY-MM-DD or an RFC 3339 time";
    const END_DATE: &str = "endDate must be a real calendar date YYYY-MM-DD or an RFC 3339 time";
    const UNTIL: &str =
        "extension.until must be a real calendar date YYYY-MM-DD or an RFC 3339 time";
    const PRODUCT: &str =
        "product must be a lower-case id like email-safeguard (letters, digits and '-')";
    const EMAIL: &str = "admins[].email must be an e-mail address such as admin@example.com";
    const TENANT_NAME: &str = "metadata.name must be a DNS label (lower-case letters, digits and '-', at most 63 characters)";
    const PATTERN: &str = "in body should match";

    vec![
        // --- Subscription: dates in order
        sub_case(
            "endDate before startDate",
            "{startDate: '2026-05-01', endDate: '2026-04-01'}",
            END_AFTER_START,
        ),
        sub_case(
            "endDate before startDate, RFC 3339 times on the same day",
            "{startDate: '2026-12-31T12:00:00Z', endDate: '2026-12-31T11:59:59Z'}",
            END_AFTER_START,
        ),
        sub_case(
            "endDate at the startDate instant",
            "{startDate: '2026-12-31T12:00:00+09:00', endDate: '2026-12-31T03:00:00Z'}",
            END_AFTER_START,
        ),
        sub_case(
            "bare endDate ends exactly when an RFC 3339 startDate begins",
            "{startDate: '2027-01-01T00:00:00Z', endDate: '2026-12-31'}",
            END_AFTER_START,
        ),
        // --- Subscription: seats, plan, product, owner
        sub_case(
            "seats 0",
            "{seats: 0}",
            &["spec.seats", "should be greater than or equal to 1"],
        ),
        sub_case(
            "seats negative",
            "{seats: -5}",
            &["spec.seats", "should be greater than or equal to 1"],
        ),
        sub_case(
            "unknown plan Gold",
            "{plan: Gold}",
            &[
                r#"spec.plan: Unsupported value: "Gold""#,
                r#"supported values: "Paid", "Trial""#,
            ],
        ),
        sub_case(
            "product not a lower-case id",
            "{product: Email_Safeguard}",
            &["spec.product", PRODUCT],
        ),
        sub_case(
            "product empty",
            "{product: ''}",
            &["spec.product", "should be at least 1 chars long"],
        ),
        sub_case(
            "empty tenantRef",
            "{tenantRef: ''}",
            &["spec.tenantRef", "should be at least 1 chars long"],
        ),
        sub_case(
            "tenantRef not a tenant name",
            "{tenantRef: Acme_Corp}",
            &["spec.tenantRef", "tenantRef must be a Tenant name"],
        ),
        sub_case(
            "missing endDate",
            "{endDate: null}",
            &["spec.endDate: Required value"],
        ),
        // --- Subscription: sharedWith
        sub_case(
            "a tenant listed twice in sharedWith (server-side apply)",
            "{sharedWith: [globex, globex]}",
            &[r#".spec.sharedWith: duplicate entries for key [="globex"]"#],
        ),
        sub_case(
            "a tenant listed twice in sharedWith (create)",
            "{sharedWith: [globex, globex]}",
            &[r#"spec.sharedWith[1]: Duplicate value: "globex""#],
        )
        .via(Via::Create),
        sub_case(
            "the owner listed in sharedWith",
            "{tenantRef: acme, sharedWith: [globex, acme]}",
            &[
                "spec.sharedWith",
                "sharedWith must not list the owner (tenantRef) itself",
            ],
        ),
        sub_case(
            "sharedWith entry not a tenant name",
            "{sharedWith: [Globex_Corp]}",
            &["spec.sharedWith[0]", "must be a Tenant name"],
        ),
        // --- Subscription: extension
        sub_case(
            "extension.until equal to endDate",
            "{endDate: '2026-12-31', extension: {until: '2026-12-31'}}",
            UNTIL_AFTER_END,
        ),
        sub_case(
            "extension.until before endDate",
            "{endDate: '2026-12-31', extension: {until: '2026-12-01', reason: order 4711}}",
            UNTIL_AFTER_END,
        ),
        sub_case(
            "extension.until (RFC 3339) at the end of a bare endDate",
            "{endDate: '2026-12-31', extension: {until: '2027-01-01T00:00:00Z'}}",
            UNTIL_AFTER_END,
        ),
        // --- Subscription: malformed dates, in each date field
        sub_case(
            "startDate 2026-02-30",
            "{startDate: '2026-02-30'}",
            &["spec.startDate", START_DATE],
        ),
        sub_case(
            "startDate 2026/12/31",
            "{startDate: '2026/12/31'}",
            &["spec.startDate", PATTERN, START_DATE],
        ),
        sub_case(
            "startDate tomorrow",
            "{startDate: tomorrow}",
            &["spec.startDate", PATTERN, START_DATE],
        ),
        sub_case(
            "endDate 2026-02-30",
            "{endDate: '2026-02-30'}",
            &["spec.endDate", END_DATE],
        ),
        sub_case(
            "endDate 2026/12/31",
            "{endDate: '2026/12/31'}",
            &["spec.endDate", PATTERN, END_DATE],
        ),
        sub_case(
            "endDate tomorrow",
            "{endDate: tomorrow}",
            &["spec.endDate", PATTERN, END_DATE],
        ),
        sub_case(
            "extension.until 2026-02-30",
            "{startDate: '2026-01-01', endDate: '2026-01-31', extension: {until: '2026-02-30'}}",
            &["spec.extension.until", UNTIL],
        ),
        sub_case(
            "extension.until 2026/12/31",
            "{extension: {until: '2026/12/31'}}",
            &["spec.extension.until", PATTERN, UNTIL],
        ),
        sub_case(
            "extension.until tomorrow",
            "{extension: {until: tomorrow}}",
            &["spec.extension.until", PATTERN, UNTIL],
        ),
        sub_case(
            "endDate with an hour 25",
            "{endDate: '2026-12-31T25:00:00Z'}",
            &["spec.endDate", PATTERN, END_DATE],
        ),
        // --- Tenant
        tenant_case(
            "negative users",
            "{users: -1}",
            &["spec.users", "users must not be negative"],
        ),
        tenant_case(
            "admin e-mail without @",
            "{admins: [{email: not-an-email}]}",
            &["spec.admins[0].email", EMAIL],
        ),
        tenant_case(
            "admin e-mail with a space",
            "{admins: [{email: 'it admin@acme.example'}]}",
            &["spec.admins[0].email", EMAIL],
        ),
        tenant_case(
            "duplicate products in services (server-side apply)",
            "{services: [{product: email-safeguard}, {product: email-safeguard, settings: {a: 1}}]}",
            &[r#".spec.services: duplicate entries for key [product="email-safeguard"]"#],
        ),
        tenant_case(
            "duplicate products in services (create)",
            "{services: [{product: email-safeguard}, {product: email-safeguard}]}",
            &[r#"spec.services[1]: Duplicate value: {"product":"email-safeguard"}"#],
        )
        .via(Via::Create),
        tenant_case(
            "service product not a lower-case id",
            "{services: [{product: Email_Safeguard}]}",
            &["spec.services[0].product", PRODUCT],
        ),
        tenant_case(
            "duplicate admin e-mails (server-side apply)",
            "{admins: [{email: a@acme.example}, {email: a@acme.example, name: A}]}",
            &[r#".spec.admins: duplicate entries for key [email="a@acme.example"]"#],
        ),
        tenant_case(
            "duplicate admin e-mails (create)",
            "{admins: [{email: a@acme.example}, {email: a@acme.example}]}",
            &[r#"spec.admins[1]: Duplicate value: {"email":"a@acme.example"}"#],
        )
        .via(Via::Create),
        // The server's own metadata.name check (RFC 1123 subdomain) and our DNS-label rule both
        // reject `Acme_Corp`; both messages are printed.
        tenant_case(
            "tenant name Acme_Corp",
            "{}",
            &["a lowercase RFC 1123 subdomain", TENANT_NAME],
        )
        .named("Acme_Corp"),
        // A valid subdomain that is not a DNS label: only our rule catches it.
        tenant_case("tenant name acme.corp", "{}", &[TENANT_NAME]).named("acme.corp"),
        tenant_case("tenant name of 64 characters", "{}", &[TENANT_NAME]).named(&"a".repeat(64)),
        tenant_case(
            "workloadNamespaces entry not a namespace name",
            "{workloadNamespaces: [Mail_Acme]}",
            &["spec.workloadNamespaces[0]", "must be a namespace name"],
        ),
        tenant_case(
            "workloadNamespaces entry listed twice (create)",
            "{workloadNamespaces: [mail-acme, mail-acme]}",
            &[r#"spec.workloadNamespaces[1]: Duplicate value: "mail-acme""#],
        )
        .via(Via::Create),
        tenant_case(
            "unknown locale",
            "{locale: fr}",
            &[
                r#"spec.locale: Unsupported value: "fr""#,
                r#"supported values: "en", "ja""#,
            ],
        ),
    ]
    .into_iter()
    .chain(bound_cases())
    .collect()
}

/// The size bounds (`api::bounds`, docs/size-budget.md): what keeps one tenant from stopping
/// the operator for the others.
fn bound_cases() -> Vec<Case> {
    fn nested(depth: usize) -> Value {
        (0..depth).fold(json!(1), |v, _| json!({ "k": v }))
    }
    fn with_settings(mut case: Case, settings: Value) -> Case {
        case.object["spec"]["services"][0]["settings"] = settings;
        case
    }
    const TOO_DEEP: &str = "Too many: 1: must have at most 0 items";
    vec![
        with_settings(
            tenant_case(
                "settings nested 300 levels deep",
                "{}",
                &["spec.services[0].settings.a.k.k.k", TOO_DEEP],
            ),
            json!({ "a": nested(300) }),
        ),
        with_settings(
            tenant_case(
                "settings one level deeper than allowed (an object at the 4th level)",
                "{}",
                &["spec.services[0].settings.a.b.c.d", TOO_DEEP],
            ),
            json!({ "a": {"b": {"c": {"d": {"e": 1}}}} }),
        ),
        with_settings(
            tenant_case(
                "settings one level deeper than allowed (a list at the 4th level)",
                "{}",
                &["spec.services[0].settings.a[0][0][0]", TOO_DEEP],
            ),
            json!({ "a": [[[[1]]]] }),
        ),
        with_settings(
            tenant_case(
                "65 settings",
                "{}",
                &[
                    "spec.services[0].settings",
                    "Too many: 65: must have at most 64 items",
                ],
            ),
            Value::Object((0..65).map(|i| (format!("s{i}"), json!(i))).collect()),
        ),
        with_settings(
            tenant_case(
                "a nested object with 33 keys",
                "{}",
                &[
                    "spec.services[0].settings.a",
                    "Too many: 33: must have at most 32 items",
                ],
            ),
            json!({ "a": Value::Object((0..33).map(|i| (format!("k{i}"), json!(i))).collect()) }),
        ),
        with_settings(
            tenant_case(
                "a list of 33 items in settings",
                "{}",
                &[
                    "spec.services[0].settings.a",
                    "Too many: 33: must have at most 32 items",
                ],
            ),
            json!({ "a": (0..33).collect::<Vec<_>>() }),
        ),
        with_settings(
            tenant_case(
                "a settings string of 1025 characters",
                "{}",
                &[
                    "spec.services[0].settings.a.b",
                    "Too long: may not be more than 1024 bytes",
                ],
            ),
            json!({ "a": {"b": "x".repeat(1025)} }),
        ),
        tenant_case(
            "users beyond 1,000,000,000",
            "{users: 1000000001}",
            &["spec.users", "should be less than or equal to 1000000000"],
        ),
    ]
}

/// `kubectl apply` of `crds/` prints no warning (such as `unrecognized format "uint32"`): the
/// schemas use only formats the API server knows. Applied again over the installed CRDs, with the
/// harness' field manager, so it changes nothing, also on an existing cluster.
#[test]
fn crds_apply_without_warnings() {
    let dir = common::repo_dir().join("crds");
    let dir = dir.to_str().expect("UTF-8 path");
    let manager = format!("--field-manager={FIELD_MANAGER}");
    for args in [
        vec![
            "apply",
            "--server-side",
            "--force-conflicts",
            &manager,
            "-f",
            dir,
        ],
        vec![
            "apply",
            "--server-side",
            "--dry-run=server",
            &manager,
            "-f",
            dir,
        ],
    ] {
        let out = kubectl(&args);
        assert!(out.status.success(), "{}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.to_lowercase().contains("warning"),
            "kubectl {args:?} warned: {}",
            describe(&out)
        );
    }
}

#[test]
fn invalid_manifests_are_rejected_with_their_message() {
    let mut cleanup = Cleanup::new();
    let mut failures = Vec::new();
    let cases = invalid_cases();
    for case in &cases {
        let out = match case.via {
            Via::ServerSideApply => apply(&case.object),
            Via::Create => kubectl_stdin(&["create", "-f", "-"], &case.object.to_string()),
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        let what = format!("{} ({:?}) {}", case.what, case.via, case.object["spec"]);
        if out.status.success() {
            let kind = case.object["kind"].as_str().unwrap_or("").to_lowercase();
            cleanup.add(
                &kind,
                case.object["metadata"]["name"].as_str().unwrap_or(""),
            );
            failures.push(format!("ACCEPTED: {what}\n  {}", stdout(&out).trim()));
            continue;
        }
        let missing: Vec<_> = case
            .expect
            .iter()
            .filter(|e| !stderr.contains(*e))
            .collect();
        if !missing.is_empty() {
            failures.push(format!(
                "REJECTED WITHOUT THE EXPECTED MESSAGE: {what}\n  missing {missing:?}\n  stderr: {}",
                stderr.trim()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} invalid manifests were not rejected as expected:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

#[test]
fn valid_subscriptions_are_accepted() {
    let mut cleanup = Cleanup::new();
    let cases = [
        (
            "minimal, RFC 3339 endDate with an offset, plan defaulted",
            "{plan: null, startDate: '2026-01-01', endDate: '2026-12-31T12:00:00+09:00'}",
        ),
        (
            "bare dates",
            "{startDate: '2026-01-01', endDate: '2026-12-31'}",
        ),
        (
            "one day: start and end on the same bare date",
            "{startDate: '2026-05-01', endDate: '2026-05-01'}",
        ),
        (
            "RFC 3339 start and end, fractional seconds",
            "{startDate: '2026-01-01T09:30:00+09:00', endDate: '2026-12-31T23:59:59.5Z'}",
        ),
        (
            "leap day",
            "{startDate: '2024-02-29', endDate: '2028-02-29'}",
        ),
        (
            "trial shared with two tenants, extended",
            "{plan: Trial, sharedWith: [globex, initech], endDate: '2026-12-31', \
              extension: {until: '2027-01-01T00:00:01Z', reason: renewal order 4711}}",
        ),
    ];
    let mut failures = Vec::new();
    for (what, patch) in cases {
        let name = unique_name("ok-sub");
        let object = subscription(&name, patch);
        let out = apply(&object);
        if !out.status.success() {
            failures.push(format!("{what}: {patch}\n{}", describe(&out)));
            continue;
        }
        cleanup.add("subscription", &name);
        let out = kubectl(&[
            "get",
            "subscription",
            &name,
            "-o",
            "jsonpath={.spec.startDate} {.spec.endDate} {.spec.plan}",
        ]);
        let want = format!(
            "{} {} {}",
            object["spec"]["startDate"].as_str().unwrap_or_default(),
            object["spec"]["endDate"].as_str().unwrap_or_default(),
            object["spec"]["plan"].as_str().unwrap_or("Paid"),
        );
        if stdout(&out) != want {
            failures.push(format!(
                "{what}: stored as {:?}, want {want:?}",
                stdout(&out)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn minimal_tenant_is_accepted_and_defaulted() {
    let name = unique_name("min-tenant");
    let mut cleanup = Cleanup::new();
    let object = json!({
        "apiVersion": "mailsec.io/v1alpha1",
        "kind": "Tenant",
        "metadata": {"name": name},
        "spec": {},
    });
    let out = apply(&object);
    assert!(out.status.success(), "{}", describe(&out));
    cleanup.add("tenant", &name);
    let out = kubectl(&[
        "get",
        "tenant",
        &name,
        "-o",
        "jsonpath={.spec.users} {.spec.locale}",
    ]);
    assert_eq!(stdout(&out), "0 en", "{}", describe(&out));
}

// ---------------------------------------------------------------------------------------------
// (c) kubectl explain

/// `kubectl explain` needs the CRD in the server's OpenAPI, which is published shortly after
/// the CRD is established: retry for a while.
fn explain(path: &str, phrase: &str) {
    let mut last = String::new();
    let found = common::eventually(Duration::from_secs(30), || {
        let out = kubectl(&["explain", path]);
        last = describe(&out);
        (out.status.success() && squash(&stdout(&out)).contains(phrase)).then_some(())
    });
    assert!(
        found.is_some(),
        "`kubectl explain {path}` does not show {phrase:?}:\n{last}"
    );
}

#[test]
fn kubectl_explain_shows_the_doc_comments() {
    explain(
        "tenant",
        "then ReadOnly (settings frozen, mail still filtered), then Suspended",
    );
    explain(
        "tenant.spec",
        "its users (counted against subscription seats) and the administrators who are notified",
    );
    explain("tenant.spec", "workloadNamespaces");
    explain(
        "tenant.spec.services.settings",
        "Frozen while the service or the whole tenant is read-only",
    );
    explain(
        "subscription.spec.endDate",
        "`YYYY-MM-DD` ends at the end of that day (UTC); an RFC 3339 time ends at that instant",
    );
    explain(
        "subscription.spec.extension",
        "The effective end is the later of `endDate` and `extension.until`",
    );
}

// ---------------------------------------------------------------------------------------------
// (d) printer columns, category, short names

fn header(out: &std::process::Output) -> Vec<String> {
    stdout(out)
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The row for `name` as `(column, value)` pairs, cut at the header's column offsets (kubectl
/// aligns the columns; empty cells are blank).
fn row(out: &std::process::Output, name: &str) -> Vec<(String, String)> {
    let text = stdout(out);
    let head = text.lines().next().unwrap_or_default();
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row for {name} in:\n{text}"));
    let starts: Vec<usize> = head
        .char_indices()
        .filter(|&(i, c)| c != ' ' && (i == 0 || head.as_bytes()[i - 1] == b' '))
        .map(|(i, _)| i)
        .collect();
    let columns = header(out);
    assert_eq!(starts.len(), columns.len(), "header {head:?}");
    starts
        .iter()
        .enumerate()
        .map(|(n, &from)| {
            let to = starts
                .get(n + 1)
                .copied()
                .unwrap_or(line.len())
                .min(line.len());
            let value = line.get(from.min(to)..to).unwrap_or_default().trim();
            (columns[n].clone(), value.to_string())
        })
        .collect()
}

fn cell<'a>(row: &'a [(String, String)], column: &str) -> &'a str {
    row.iter()
        .find(|(c, _)| c == column)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no column {column} in {row:?}"))
}

#[test]
fn printer_columns_category_and_short_names() {
    let mut cleanup = Cleanup::new();
    let t = unique_name("cols");
    let s = unique_name("cols-sub");
    let out = apply(&tenant(&t, "{users: 7}"));
    assert!(out.status.success(), "{}", describe(&out));
    cleanup.add("tenant", &t);
    let out = apply(&subscription(
        &s,
        &format!("{{tenantRef: {t}, plan: Trial, seats: 25}}"),
    ));
    assert!(out.status.success(), "{}", describe(&out));
    cleanup.add("subscription", &s);

    // Status as the operator would write it, so that every column has a value.
    let tenant_status = json!({"status": {
        "phase": "Warning",
        "nextTransitionAt": "2026-12-31T00:00:00Z",
        "conditions": [
            {"type": "Warning", "status": "True", "reason": "ExpiringSoon",
             "message": "email-safeguard ends on 2026-12-31", "lastTransitionTime": "2026-12-01T00:00:00Z"},
            {"type": "ReadOnly", "status": "False", "reason": "Covered",
             "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "Suspended", "status": "False", "reason": "Covered",
             "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"},
        ],
    }});
    let out = kubectl(&[
        "patch",
        "tenant",
        &t,
        "--subresource=status",
        "--type=merge",
        "-p",
        &tenant_status.to_string(),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let sub_status = json!({"status": {
        "phase": "ExpiringSoon",
        "effectiveEndAt": "2027-01-01T00:00:00Z",
        "nextTransitionAt": "2027-01-01T00:00:00Z",
        "seatsUsed": 7,
    }});
    let out = kubectl(&[
        "patch",
        "subscription",
        &s,
        "--subresource=status",
        "--type=merge",
        "-p",
        &sub_status.to_string(),
    ]);
    assert!(out.status.success(), "{}", describe(&out));

    let out = kubectl(&["get", "tenants", &t]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        header(&out),
        [
            "NAME",
            "PHASE",
            "REASON",
            "READONLY",
            "SUSPENDED",
            "NEXT",
            "AGE"
        ],
        "{}",
        describe(&out)
    );
    let r = row(&out, &t);
    assert_eq!(cell(&r, "PHASE"), "Warning", "{r:?}");
    assert_eq!(cell(&r, "REASON"), "ExpiringSoon", "{r:?}");
    assert_eq!(cell(&r, "READONLY"), "False", "{r:?}");
    assert_eq!(cell(&r, "SUSPENDED"), "False", "{r:?}");

    let out = kubectl(&["get", "tenants", &t, "-o", "wide"]);
    let r = row(&out, &t);
    assert_eq!(cell(&r, "USERS"), "7", "{}", describe(&out));

    let out = kubectl(&["get", "subscriptions", &s]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        header(&out),
        ["NAME", "TENANT", "PRODUCT", "PLAN", "END", "PHASE", "AGE"],
        "{}",
        describe(&out)
    );
    let r = row(&out, &s);
    assert_eq!(cell(&r, "TENANT"), t, "{r:?}");
    assert_eq!(cell(&r, "PRODUCT"), "email-safeguard", "{r:?}");
    assert_eq!(cell(&r, "PLAN"), "Trial", "{r:?}");
    assert_eq!(cell(&r, "END"), "2027-01-01T00:00:00Z", "{r:?}");
    assert_eq!(cell(&r, "PHASE"), "ExpiringSoon", "{r:?}");

    let out = kubectl(&["get", "subscriptions", &s, "-o", "wide"]);
    let r = row(&out, &s);
    assert_eq!(cell(&r, "SEATS"), "25", "{}", describe(&out));
    assert_eq!(cell(&r, "USED"), "7", "{}", describe(&out));

    // The category lists both kinds.
    let out = kubectl(&["get", "mailsec", "-o", "name"]);
    assert!(out.status.success(), "{}", describe(&out));
    let names = stdout(&out);
    for want in [
        format!("tenant.mailsec.io/{t}"),
        format!("subscription.mailsec.io/{s}"),
    ] {
        assert!(
            names.lines().any(|l| l == want),
            "`kubectl get mailsec` lacks {want}:\n{names}"
        );
    }

    // Short names.
    for (short, name, full) in [
        ("mten", &t, "tenant.mailsec.io"),
        ("msub", &s, "subscription.mailsec.io"),
    ] {
        let out = kubectl(&["get", short, name, "-o", "name"]);
        assert_eq!(
            stdout(&out).trim(),
            format!("{full}/{name}"),
            "kubectl get {short}: {}",
            describe(&out)
        );
    }
    // Not `subs` (nor `sub`): OLM's Subscription has them, and a cluster with OLM would send
    // `kubectl get subs` to one kind or the other.
    let out = kubectl(&[
        "get",
        "crd",
        Subscription::crd_name(),
        "-o",
        "jsonpath={.spec.names.shortNames}",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&out).trim(), r#"["msub"]"#, "{}", describe(&out));
}

/// `nextTransitionAt` is always in the future, and kubectl prints a future `date` column as
/// `<invalid>`: the NEXT column must show the instant itself.
#[test]
fn next_column_shows_the_next_transition() {
    let mut cleanup = Cleanup::new();
    let t = unique_name("next");
    let s = unique_name("next-sub");
    let out = apply(&tenant(&t, "{}"));
    assert!(out.status.success(), "{}", describe(&out));
    cleanup.add("tenant", &t);
    let out = apply(&subscription(&s, &format!("{{tenantRef: {t}}}")));
    assert!(out.status.success(), "{}", describe(&out));
    cleanup.add("subscription", &s);
    let status = r#"{"status":{"phase":"Active","nextTransitionAt":"2099-03-02T00:00:00Z"}}"#;
    for (kind, name, wide) in [("tenant", &t, false), ("subscription", &s, true)] {
        let out = kubectl(&[
            "patch",
            kind,
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            status,
        ]);
        assert!(out.status.success(), "{}", describe(&out));
        let mut args = vec!["get", kind, name.as_str()];
        if wide {
            args.extend(["-o", "wide"]);
        }
        let out = kubectl(&args);
        let r = row(&out, name);
        assert!(
            cell(&r, "NEXT").contains("2099-03-02"),
            "{kind} NEXT column: {}",
            describe(&out)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// (e) status subresource

fn jsonpath(kind: &str, name: &str, path: &str) -> String {
    let out = kubectl(&["get", kind, name, "-o", &format!("jsonpath={path}")]);
    assert!(out.status.success(), "{}", describe(&out));
    stdout(&out)
}

#[test]
fn tenant_status_is_a_subresource() {
    let mut cleanup = Cleanup::new();
    let t = unique_name("status");
    let out = apply(&tenant(&t, "{}"));
    assert!(out.status.success(), "{}", describe(&out));
    cleanup.add("tenant", &t);
    assert_eq!(jsonpath("tenant", &t, "{.metadata.generation}"), "1");

    let out = kubectl(&[
        "patch",
        "tenant",
        &t,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Warning"}}"#,
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(jsonpath("tenant", &t, "{.status.phase}"), "Warning");
    // A status write does not bump the generation (observedGeneration relies on this).
    assert_eq!(jsonpath("tenant", &t, "{.metadata.generation}"), "1");

    // Writes to the main resource ignore status ...
    let out = kubectl(&[
        "patch",
        "tenant",
        &t,
        "--type=merge",
        "-p",
        r#"{"spec":{"users":9},"status":{"phase":"Suspended"}}"#,
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(jsonpath("tenant", &t, "{.status.phase}"), "Warning");
    // ... and spec changes do bump it.
    assert_eq!(jsonpath("tenant", &t, "{.metadata.generation}"), "2");

    // The status schema is enforced too.
    let out = kubectl(&[
        "patch",
        "tenant",
        &t,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Bogus"}}"#,
    ]);
    assert!(
        !out.status.success(),
        "phase Bogus accepted: {}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(r#"Unsupported value: "Bogus""#),
        "{}",
        describe(&out)
    );
}

/// `services[].settings` is free-form: nested objects must be stored as written.
#[test]
fn nested_service_settings_are_preserved() {
    let mut cleanup = Cleanup::new();
    let t = unique_name("settings");
    let settings = json!({
        "spamThreshold": 5,
        "lists": {"allow": ["a.example"], "deny": {"domains": ["spam.example"]}},
        "rules": [{"match": "*.zip", "action": "quarantine"}],
    });
    let mut object = tenant(&t, "{}");
    object["spec"]["services"][0]["settings"] = settings.clone();
    let out = apply(&object);
    assert!(out.status.success(), "{}", describe(&out));
    cleanup.add("tenant", &t);
    let stored = jsonpath("tenant", &t, "{.spec.services[0].settings}");
    let stored: Value = serde_json::from_str(&stored).expect("settings are JSON");
    assert_eq!(stored, settings, "the server changed the settings");
}

// ---------------------------------------------------------------------------------------------
// The Rust types round-trip through the server

#[tokio::test]
async fn rust_types_round_trip_through_the_server() {
    let client = cluster().client().await;
    let mut cleanup = Cleanup::new();
    let pp = PatchParams::apply(FIELD_MANAGER).force();

    let t = unique_name("typed");
    let tenant: Tenant = serde_json::from_value(tenant(
        &t,
        "{locale: ja, workloadNamespaces: [mail-a, mail-b], \
          services: [{product: email-safeguard, settings: {spamThreshold: 5, mode: strict}}, \
                     {product: email-threat-isolation}]}",
    ))
    .expect("test tenant is a Tenant");
    let tenants: Api<Tenant> = Api::all(client.clone());
    cleanup.add("tenant", &t);
    let applied = tenants
        .patch(&t, &pp, &Patch::Apply(&tenant))
        .await
        .expect("server-side apply a Tenant built in Rust");
    assert_eq!(applied.spec, tenant.spec);

    let status = json!({
        "phase": "ReadOnly",
        "services": [{
            "product": "email-safeguard", "base": true, "phase": "ReadOnly",
            "subscription": "acme-esg", "plan": "Paid",
            "effectiveEndAt": "2027-01-01T00:00:00Z", "expiringSoonAt": "2026-12-02T00:00:00Z",
            "readOnlySince": "2027-01-01T00:00:00Z", "suspendsAt": "2027-01-31T00:00:00Z",
        }],
        "nextTransitionAt": "2027-01-31T00:00:00Z",
        "conditions": [{"type": "ReadOnly", "status": "True", "reason": "SubscriptionExpired",
                        "message": "acme-esg ended", "lastTransitionTime": "2027-01-01T00:00:00Z",
                        "observedGeneration": 1}],
        "milestones": [{"id": "ReadOnly/email-safeguard/2027-01-01T00:00:00Z", "kind": "ReadOnly",
                        "dueAt": "2027-01-01T00:00:00Z", "announcedAt": "2027-01-01T00:00:05Z"}],
        "observedGeneration": 1,
    });
    let want: mailsec_operator::api::TenantStatus =
        serde_json::from_value(status.clone()).expect("test status is a TenantStatus");
    let got = tenants
        .patch_status(
            &t,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .expect("patch a Tenant's status");
    assert_eq!(
        got.status,
        Some(want),
        "the server changed the Tenant status"
    );

    let s = unique_name("typed-sub");
    let subscription: Subscription = serde_json::from_value(subscription(
        &s,
        &format!(
            "{{tenantRef: {t}, sharedWith: [other], extension: {{until: '2027-02-01', reason: r}}}}"
        ),
    ))
    .expect("test subscription is a Subscription");
    let subscriptions: Api<Subscription> = Api::all(client);
    cleanup.add("subscription", &s);
    let applied = subscriptions
        .patch(&s, &pp, &Patch::Apply(&subscription))
        .await
        .expect("server-side apply a Subscription built in Rust");
    assert_eq!(applied.spec, subscription.spec);

    let status = json!({
        "phase": "GracePeriod",
        "startsAt": "2026-01-01T00:00:00Z",
        "effectiveEndAt": "2027-02-02T00:00:00Z",
        "expiringSoonAt": "2027-01-03T00:00:00Z",
        "graceEndsAt": "2027-03-04T00:00:00Z",
        "nextTransitionAt": "2027-03-04T00:00:00Z",
        "seatsUsed": 12,
        "tenant": t,
        "transfers": [{"from": "old", "to": t, "at": "2026-06-01T10:00:00Z"}],
        "conditions": [{"type": "Ready", "status": "True", "reason": "Evaluated", "message": "",
                        "lastTransitionTime": "2026-06-01T10:00:00Z"}],
        "observedGeneration": 1,
    });
    let want: mailsec_operator::api::SubscriptionStatus =
        serde_json::from_value(status.clone()).expect("test status is a SubscriptionStatus");
    let got = subscriptions
        .patch_status(
            &s,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .expect("patch a Subscription's status");
    assert_eq!(
        got.status,
        Some(want),
        "the server changed the Subscription status"
    );
}
