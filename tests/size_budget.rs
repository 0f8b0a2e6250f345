//! The size budget of docs/size-budget.md, measured on a real API server: a Tenant with every
//! list of its spec and status at its bound and every string at its longest is stored (spec by
//! server-side apply, status by the operator's two field managers, so `managedFields` is as the
//! operator makes it), read back, and its size checked against etcd's default request limit
//! (1.5 MiB) with the margin the budget promises.
//!
//! `cargo test --test size_budget -- --nocapture` prints the breakdown the document quotes.

mod common;

use chrono::{DateTime, TimeDelta, Utc};
use common::{FIELD_MANAGER, cluster, unique_name};
use kube::api::{Api, Patch, PatchParams};
use mailsec_operator::api::Tenant;
use mailsec_operator::api::bounds::*;
use serde_json::{Value, json};

/// etcd's default `--max-request-bytes`: the largest object the API server can store.
const ETCD_LIMIT: usize = 1_572_864;
/// What docs/size-budget.md allows a Tenant's service settings in all (2 KiB per service on
/// average): the one part of the object whose bytes the schema can not bound.
const SETTINGS_BUDGET: usize = 64 * 1024;
/// The API server's limit on a object's annotations (keys and values together).
const ANNOTATIONS_LIMIT: usize = 256 * 1024;
/// What the budget keeps free below etcd's limit, for what it does not count exactly.
const MARGIN: usize = 64 * 1024;

/// A character JSON writes as 6 bytes (`\u0001`): the worst case for free text.
const WORST: char = '\u{1}';

fn text(len: usize) -> String {
    "x".repeat(len)
}

fn worst_text(len: usize) -> String {
    WORST.to_string().repeat(len)
}

/// `prefix` padded with `x` to exactly `len` characters.
fn padded(prefix: &str, len: usize) -> String {
    format!("{prefix}{}", text(len.saturating_sub(prefix.len())))
}

fn instant(i: i64) -> String {
    let t: DateTime<Utc> =
        DateTime::from_timestamp(1_800_000_000, 0).expect("instant") + TimeDelta::seconds(i);
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Settings of one service: `bytes` of JSON (about), as 64 settings of plain strings.
fn settings(bytes: usize) -> Value {
    let per = bytes / SETTINGS_KEYS as usize;
    Value::Object(
        (0..SETTINGS_KEYS)
            .map(|i| {
                let key = format!("setting{i:02}");
                let value = text(
                    per.saturating_sub(key.len() + 7)
                        .min(SETTINGS_STRING_CHARS as usize),
                );
                (key, json!(value))
            })
            .collect(),
    )
}

fn maximal_spec(name: &str) -> Value {
    let per_service = SETTINGS_BUDGET / 32;
    json!({
        "apiVersion": "mailsec.io/v1alpha1",
        "kind": "Tenant",
        // Annotations at the API server's limit (a client-side `kubectl apply` keeps a copy of
        // the manifest in one).
        "metadata": {"name": name, "annotations": {
            "example.com/padding": text(ANNOTATIONS_LIMIT - "example.com/padding".len()),
        }},
        "spec": {
            "displayName": worst_text(256),
            "users": MAX_USERS,
            "locale": "ja",
            "services": (0..32).map(|i| json!({
                "product": padded(&format!("p{i:02}-"), 63),
                "settings": settings(per_service),
            })).collect::<Vec<_>>(),
            "admins": (0..64).map(|i| json!({
                "email": format!("{}{i:02}@acme.example", worst_text(254 - 15)),
                "name": worst_text(256),
            })).collect::<Vec<_>>(),
            "workloadNamespaces": (0..32).map(|i| padded(&format!("ns{i:02}-"), 63)).collect::<Vec<_>>(),
        },
    })
}

/// The status the operator's tenant controller writes, at every bound (engine-built text is
/// ASCII: names, ids and English messages).
fn maximal_status() -> Value {
    let condition = |i: usize| {
        json!({
            "type": padded(&format!("Type{i:02}"), 316),
            "status": "Unknown",
            "reason": padded(&format!("Reason{i:02}"), 1024),
            "message": text(MAX_CONDITION_MESSAGE),
            "lastTransitionTime": instant(0),
            "observedGeneration": MAX_STATUS_INT,
        })
    };
    json!({
        "phase": "Suspended",
        "services": (0..33).map(|i| json!({
            "product": padded(&format!("p{i:02}-"), 63),
            "base": i == 0,
            "phase": "ExpiringSoon",
            "subscription": padded(&format!("s{i:02}-"), 253),
            "plan": "Trial",
            "effectiveEndAt": instant(1), "expiringSoonAt": instant(2), "readOnlySince": instant(3),
            "suspendsAt": instant(4), "missingSince": instant(5),
        })).collect::<Vec<_>>(),
        "nextTransitionAt": instant(6),
        "conditions": (0..MAX_CONDITIONS).map(condition).collect::<Vec<_>>(),
        "milestones": (0..MAX_MILESTONES).map(|i| json!({
            "id": padded(&format!("m{i:03}/"), 384),
            "kind": "SubscriptionMissing",
            "product": padded("p-", 63),
            "dueAt": instant(7), "announcedAt": instant(8),
            "subscription": padded("s-", 253),
            "peer": padded("t-", 63),
            "eventOnly": true,
            "effectiveEndAt": instant(9), "suspendsAt": instant(10),
        })).collect::<Vec<_>>(),
        "settingsAppliedGeneration": MAX_STATUS_INT,
        "settingsDigest": "0".repeat(64),
        // JSON in a JSON string: every quote escaped, twice the bytes.
        "settingsInEffect": "\"".repeat(8 * 1024),
        "licencesHeld": (0..16).map(|i| padded(&format!("l{i:02}-"), 253)).collect::<Vec<_>>(),
        "possibleDuplicates": (0..8).map(|i| json!({
            "tenant": padded(&format!("d{i}-"), 63),
            "sharedAdmins": (0..4).map(|j| padded(&format!("a{j}@"), 254)).collect::<Vec<_>>(),
            "tenantInUse": padded("u-", 63),
            "subscriptionsToMove": (0..8).map(|j| padded(&format!("s{j}-"), 253)).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "observedGeneration": MAX_STATUS_INT,
    })
}

/// The notifier's outbox at its bound; `lastError` is outside text (a mail server's answer),
/// cut to 512 bytes of stored JSON (`api::bounds::truncate_json`): here 85 characters that Go
/// writes as 6 bytes each.
fn maximal_outbox() -> Value {
    json!({
        "notifications": (0..MAX_NOTIFICATIONS).map(|i| json!({
            "id": padded(&format!("n{i:03}/"), 704),
            "milestone": padded("m/", 384),
            "channel": "Webhook",
            "recipient": padded("r@", 254),
            "state": "Failed",
            "attempts": MAX_ATTEMPTS,
            "lastError": worst_text(85),
            "lastAttemptAt": instant(11), "nextAttemptAt": instant(12), "deliveredAt": instant(13),
            "late": true,
            "deliveryId": padded("<mailsec.", 320),
        })).collect::<Vec<_>>(),
    })
}

fn json_len(v: &Value) -> usize {
    serde_json::to_vec(v).map(|b| b.len()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_maximal_tenant_with_its_maximal_status_fits_the_budget() {
    let client = cluster().client().await;
    let api: Api<Tenant> = Api::all(client.clone());
    let name = padded(&format!("{}-", unique_name("size")), 63);
    let spec = maximal_spec(&name);
    eprintln!(
        "as sent: spec {} bytes, status {} bytes, outbox {} bytes",
        json_len(&spec["spec"]),
        json_len(&maximal_status()),
        json_len(&maximal_outbox())
    );
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Apply(&spec),
    )
    .await
    .expect("the maximal spec is accepted");
    let status =
        json!({"apiVersion": "mailsec.io/v1alpha1", "kind": "Tenant", "status": maximal_status()});
    api.patch_status(
        &name,
        &PatchParams::apply("mailsec-operator").force(),
        &Patch::Apply(&status),
    )
    .await
    .expect("the maximal status is accepted");
    let outbox =
        json!({"apiVersion": "mailsec.io/v1alpha1", "kind": "Tenant", "status": maximal_outbox()});
    api.patch_status(
        &name,
        &PatchParams::apply("mailsec-operator-notifier").force(),
        &Patch::Apply(&outbox),
    )
    .await
    .expect("the maximal outbox is accepted");

    // What the API server stores and serves (JSON; etcd holds the same bytes for a CR).
    let request = http::Request::get(format!("/apis/mailsec.io/v1alpha1/tenants/{name}"))
        .body(Vec::new())
        .expect("request");
    let raw = client.request_text(request).await.expect("get");
    let stored: Value = serde_json::from_str(&raw).expect("JSON");
    // The bytes as the API server wrote them (Go escapes `<`, `>`, `&`: more than serde_json).
    let total = raw.len();
    let spec_bytes = json_len(&stored["spec"]);
    let settings_bytes: usize = stored["spec"]["services"]
        .as_array()
        .map(|s| s.iter().map(|s| json_len(&s["settings"])).sum())
        .unwrap_or_default();
    let status_bytes = json_len(&stored["status"]);
    let managed = json_len(&stored["metadata"]["managedFields"]);
    let metadata = json_len(&stored["metadata"]);
    eprintln!(
        "maximal Tenant as stored: {total} bytes; about spec {spec_bytes} (settings {settings_bytes}) + status {status_bytes} + metadata {metadata} (managedFields {managed}); etcd limit {ETCD_LIMIT}, room left {}",
        ETCD_LIMIT as i64 - total as i64
    );
    assert!(settings_bytes <= SETTINGS_BUDGET, "{settings_bytes}");
    assert!(
        total + MARGIN <= ETCD_LIMIT,
        "{total} bytes leave less than {MARGIN} below {ETCD_LIMIT}"
    );
    let _ = api.delete(&name, &Default::default()).await;
}
