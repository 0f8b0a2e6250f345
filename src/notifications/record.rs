//! The notifier's writes: `status.notifications` only, under its own field manager, so that it
//! and the Tenant controller (which applies the rest of the status) never take each other's
//! fields.
//!
//! Each write is a JSON Patch on the status subresource that touches only the entries that
//! change: the size of a write grows with the entries it changes, never with the entries
//! stored (rewriting the whole list after each delivery made the bytes written to deliver one
//! milestone to every admin grow with the square of the admins). Every op on a stored entry is
//! guarded by a `test` of its `id` at its index, so a list that changed under the writer (it
//! is a map keyed by `id`) fails the write (HTTP 422) instead of changing another entry.

use json_patch::jsonptr::PointerBuf;
use json_patch::{
    AddOperation, Patch as JsonPatch, PatchOperation, RemoveOperation, ReplaceOperation,
    TestOperation,
};
use kube::api::{Api, Patch, PatchParams};
use serde_json::Value;

use crate::api::{NotificationRecord, Tenant};
use crate::notifications::FIELD_MANAGER;

/// Why an outbox write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    #[error("could not encode an outbox entry: {0}")]
    Encode(#[from] serde_json::Error),
}

fn pointer(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

fn entry_pointer(index: usize, field: Option<&str>) -> PointerBuf {
    let index = index.to_string();
    match field {
        Some(f) => pointer(&["status", "notifications", &index, f]),
        None => pointer(&["status", "notifications", &index]),
    }
}

fn test_id(index: usize, id: &str) -> PatchOperation {
    PatchOperation::Test(TestOperation {
        path: entry_pointer(index, Some("id")),
        value: Value::String(id.to_string()),
    })
}

/// The JSON Patch that turns `stored` (the list as read, in its order) into `desired`, or
/// `None` when they are equal. `desired` keeps the stored entries it keeps in their order and
/// appends new ones (as [`crate::notifications::outbox::plan`] does); entries are matched by
/// `id`.
///
/// With `resource_version` the patch also sets `metadata.resourceVersion` to it, which the API
/// server takes as a precondition: the write fails with HTTP 409 if the tenant changed since it
/// was read. The notifier claims entries this way before sending, so that two notifiers (a
/// leader change) can never both claim one attempt.
pub fn outbox_patch(
    stored: &[NotificationRecord],
    desired: &[NotificationRecord],
    resource_version: Option<&str>,
) -> Result<Option<JsonPatch>, serde_json::Error> {
    let mut changes = Vec::new();
    let mut removals = Vec::new();
    for (index, entry) in stored.iter().enumerate() {
        match desired.iter().find(|d| d.id == entry.id) {
            Some(d) if d == entry => {}
            Some(d) => {
                changes.push(test_id(index, &entry.id));
                changes.push(PatchOperation::Replace(ReplaceOperation {
                    path: entry_pointer(index, None),
                    value: serde_json::to_value(d)?,
                }));
            }
            None => removals.push((index, entry.id.as_str())),
        }
    }
    // Removed from the highest index down, after the replacements, so that every index named
    // is still the one that was read.
    for (index, id) in removals.into_iter().rev() {
        changes.push(test_id(index, id));
        changes.push(PatchOperation::Remove(RemoveOperation {
            path: entry_pointer(index, None),
        }));
    }
    let new: Vec<&NotificationRecord> = desired
        .iter()
        .filter(|d| !stored.iter().any(|s| s.id == d.id))
        .collect();
    if stored.is_empty() && !new.is_empty() {
        // The list may be absent: `add` of the member sets it (it only ever replaces an empty
        // list here, and the milestones it is planned from live in the same status, so the
        // status exists).
        changes.push(PatchOperation::Add(AddOperation {
            path: pointer(&["status", "notifications"]),
            value: serde_json::to_value(&new)?,
        }));
    } else {
        for d in new {
            changes.push(PatchOperation::Add(AddOperation {
                path: pointer(&["status", "notifications", "-"]),
                value: serde_json::to_value(d)?,
            }));
        }
    }
    if changes.is_empty() {
        return Ok(None);
    }
    let mut ops = Vec::with_capacity(changes.len() + 1);
    if let Some(rv) = resource_version {
        ops.push(PatchOperation::Replace(ReplaceOperation {
            path: pointer(&["metadata", "resourceVersion"]),
            value: Value::String(rv.to_string()),
        }));
    }
    ops.extend(changes);
    Ok(Some(JsonPatch(ops)))
}

/// Writes what turns `stored` (the list of the tenant as read) into `desired` (see
/// [`outbox_patch`]); returns the tenant as written, or `None` when nothing had to be written.
pub async fn patch_outbox(
    api: &Api<Tenant>,
    name: &str,
    stored: &[NotificationRecord],
    desired: &[NotificationRecord],
    resource_version: Option<&str>,
) -> Result<Option<Tenant>, WriteError> {
    let Some(patch) = outbox_patch(stored, desired, resource_version)? else {
        return Ok(None);
    };
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    Ok(Some(
        api.patch_status(name, &params, &Patch::<()>::Json(patch))
            .await?,
    ))
}

/// `stored` with the entry of `entry`'s id replaced by `entry` (unchanged if there is none): what
/// recording one outcome writes, whatever else the caller holds.
pub fn with_entry(
    stored: &[NotificationRecord],
    entry: &NotificationRecord,
) -> Vec<NotificationRecord> {
    stored
        .iter()
        .map(|s| {
            if s.id == entry.id {
                entry.clone()
            } else {
                s.clone()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{NotificationChannel, NotificationState};
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    fn entry(id: &str) -> NotificationRecord {
        NotificationRecord {
            delivery_id: Some(format!("<mailsec.{id}@ops.example>")),
            ..NotificationRecord::pending(
                format!("ReadOnly/email-safeguard/0/Email/{id}"),
                "ReadOnly/email-safeguard/0",
                NotificationChannel::Email,
                id,
            )
        }
    }

    fn delivered(mut e: NotificationRecord) -> NotificationRecord {
        e.state = NotificationState::Delivered;
        e.attempts = 1;
        e.delivered_at = Utc.timestamp_opt(1_800_000_000, 0).single();
        e
    }

    fn tenant(entries: Option<&[NotificationRecord]>) -> Value {
        let mut t = json!({
            "metadata": {"name": "globex", "resourceVersion": "7"},
            "status": {"phase": "Active", "milestones": []},
        });
        if let Some(e) = entries {
            t["status"]["notifications"] = json!(e);
        }
        t
    }

    fn apply(doc: &mut Value, patch: Option<JsonPatch>) -> Result<(), json_patch::PatchError> {
        match patch {
            Some(p) => json_patch::patch(doc, &p),
            None => Ok(()),
        }
    }

    fn notifications(doc: &Value) -> Vec<NotificationRecord> {
        serde_json::from_value(doc["status"]["notifications"].clone()).unwrap_or_default()
    }

    /// What a case is called, the list stored (`None`: absent), the list wanted.
    type Case = (
        &'static str,
        Option<Vec<NotificationRecord>>,
        Vec<NotificationRecord>,
    );

    /// Table: stored list → desired list; the patch, applied as the API server applies it, gives
    /// exactly the desired list and leaves the rest of the status alone.
    #[test]
    fn the_patch_turns_the_stored_list_into_the_desired_one() {
        let (a, b, c, d) = (entry("a"), entry("b"), entry("c"), entry("d"));
        let cases: Vec<Case> = vec![
            (
                "first entries, list absent",
                None,
                vec![a.clone(), b.clone()],
            ),
            ("first entries, list empty", Some(vec![]), vec![a.clone()]),
            (
                "nothing changes",
                Some(vec![a.clone(), b.clone()]),
                vec![a.clone(), b.clone()],
            ),
            (
                "one outcome recorded",
                Some(vec![a.clone(), b.clone(), c.clone()]),
                vec![a.clone(), delivered(b.clone()), c.clone()],
            ),
            (
                "pruned from both ends and the middle, one changed, two appended",
                Some(vec![a.clone(), b.clone(), c.clone(), d.clone()]),
                vec![delivered(b.clone()), entry("e"), entry("f")],
            ),
            (
                "everything pruned",
                Some(vec![a.clone(), b.clone()]),
                vec![],
            ),
        ];
        for (what, stored, desired) in cases {
            let mut doc = tenant(stored.as_deref());
            let patch = outbox_patch(stored.as_deref().unwrap_or_default(), &desired, Some("7"))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            if stored.as_deref().unwrap_or_default() == desired.as_slice() {
                assert!(patch.is_none(), "{what}: nothing to write");
            }
            apply(&mut doc, patch).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(notifications(&doc), desired, "{what}");
            assert_eq!(doc["status"]["phase"], "Active", "{what}");
        }
    }

    /// A patch computed from a list that changed since (an entry removed or inserted before the
    /// one written) fails instead of writing over another entry.
    #[test]
    fn a_patch_on_a_list_that_changed_fails() {
        let (a, b) = (entry("a"), entry("b"));
        let stored = vec![a.clone(), b.clone()];
        let patch = outbox_patch(&stored, &with_entry(&stored, &delivered(b.clone())), None)
            .expect("patch");
        let mut changed = tenant(Some(&[b.clone(), a.clone()]));
        assert!(apply(&mut changed, patch.clone()).is_err());
        let mut shorter = tenant(Some(std::slice::from_ref(&a)));
        assert!(apply(&mut shorter, patch).is_err());
    }

    /// Recording one outcome writes that entry only, whatever the size of the list: the bytes
    /// do not grow with the entries stored.
    #[test]
    fn one_outcome_writes_one_entry() {
        let size = |n: usize| {
            let stored: Vec<NotificationRecord> = (0..n)
                .map(|i| entry(&format!("admin{i:03}@x.example")))
                .collect();
            let last = delivered(stored[n - 1].clone());
            let patch = outbox_patch(&stored, &with_entry(&stored, &last), None)
                .expect("patch")
                .expect("a change");
            assert_eq!(patch.0.len(), 2, "test id, replace");
            serde_json::to_vec(&patch)
                .map(|v| v.len())
                .unwrap_or_default()
        };
        let (one, many) = (size(1), size(128));
        assert!(many <= one + 4, "{one} bytes for 1 entry, {many} for 128");
    }
}
