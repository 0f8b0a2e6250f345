//! The size bounds of the API: what the CRD schemas enforce at apply time, and what the engine
//! never exceeds when it builds a status. `docs/size-budget.md` derives the worst-case size of a
//! Tenant from these numbers; `tests/size_budget.rs` builds that object and measures it.

use schemars::{Schema, json_schema};

/// How deep a service's `settings` nest: the value of a setting is level 1; at this level only
/// plain values (strings, numbers, booleans, null) or empty objects and lists are accepted.
pub const SETTINGS_DEPTH: usize = 4;
/// Settings (top-level keys) per service.
pub const SETTINGS_KEYS: u64 = 64;
/// Keys of an object nested in a setting's value.
pub const SETTINGS_NESTED_KEYS: u64 = 32;
/// Items of a list in a setting's value.
pub const SETTINGS_LIST_ITEMS: u64 = 32;
/// Characters of a string in a setting's value.
pub const SETTINGS_STRING_CHARS: u64 = 1024;

/// Records in `status.milestones`: the milestones reached now (the rest are neither recorded
/// nor announced; see [`crate::engine`]) plus a history of earlier ones.
pub const MAX_MILESTONES: usize = 128;
/// Entries in `status.notifications` (the notifier's outbox); more are created once delivered
/// entries are dropped.
pub const MAX_NOTIFICATIONS: usize = 256;
/// Conditions of a Tenant or Subscription status.
pub const MAX_CONDITIONS: usize = 16;
/// Bytes of a condition message (longer ones are cut, at a character boundary).
pub const MAX_CONDITION_MESSAGE: usize = 4096;
/// The largest integer a status counter or generation may hold: 2^53 - 1, the largest the API
/// server's schema validation (which reads bounds as float64) and every JSON client hold exactly.
pub const MAX_STATUS_INT: i64 = 9_007_199_254_740_991;
/// The largest `spec.users` of a Tenant: the users of a subscription's tenants (at most 65)
/// together stay far below [`MAX_STATUS_INT`] in `status.seatsUsed`.
pub const MAX_USERS: i64 = 1_000_000_000;
/// The largest `status.notifications[].attempts` (the Rust field is a `u32`).
pub const MAX_ATTEMPTS: u32 = u32::MAX;

/// The schema of one service's `settings`: free-form, but at most [`SETTINGS_DEPTH`] levels
/// deep, with bounded keys, items and strings at every level. A structural schema can bound
/// these and nothing else about a free-form tree: CEL rules can not see untyped values (the API
/// server refuses to compile a rule on them), and `propertyNames` is not supported, so key
/// lengths and the byte size are not bounded here (see docs/size-budget.md).
pub fn settings_schema(_: &mut schemars::SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "maxProperties": SETTINGS_KEYS,
        "additionalProperties": settings_value(1),
    })
}

/// One level of a setting's value: any JSON value, bounded; below the last level, nothing.
fn settings_value(level: usize) -> serde_json::Value {
    let mut node = serde_json::json!({
        "x-kubernetes-preserve-unknown-fields": true,
        "maxLength": SETTINGS_STRING_CHARS,
    });
    if level < SETTINGS_DEPTH {
        node["maxProperties"] = SETTINGS_NESTED_KEYS.into();
        node["maxItems"] = SETTINGS_LIST_ITEMS.into();
        node["additionalProperties"] = settings_value(level + 1);
        node["items"] = settings_value(level + 1);
    } else {
        node["description"] = format!(
            "Level {SETTINGS_DEPTH} of a setting: only plain values (strings, numbers, booleans, null); settings nest at most {SETTINGS_DEPTH} levels."
        )
        .into();
        node["maxProperties"] = 0.into();
        node["maxItems"] = 0.into();
    }
    node
}

/// Cuts `s` to at most `max` bytes, at a character boundary.
pub fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}
