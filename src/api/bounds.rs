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
pub const MAX_NOTIFICATIONS: usize = 128;
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

/// The bytes `c` can take in the JSON the API server stores: Go's encoder writes control
/// characters, `<`, `>`, `&`, U+2028 and U+2029 as `\uXXXX`, `"` and `\` as two bytes.
pub fn json_bytes(c: char) -> usize {
    match c {
        '\u{0}'..='\u{1f}' | '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => 6,
        '"' | '\\' => 2,
        c => c.len_utf8(),
    }
}

/// `s`, cut (with `…` at the end) so that it takes at most `max` bytes as stored JSON, and so
/// at most `max` characters (a schema's `maxLength`): outside text (a mail server's answer, a
/// name) can not make a status larger than its budget or invalid.
pub fn truncate_json(s: &str, max: usize) -> String {
    if fits_json(s, max) {
        return s.to_string();
    }
    cut_json(s, max)
}

/// [`truncate_json`] of an owned text: returned as it is when it fits (most do), without a copy.
pub fn truncate_json_owned(s: String, max: usize) -> String {
    if fits_json(&s, max) {
        s
    } else {
        cut_json(&s, max)
    }
}

/// Whether `s` takes at most `max` bytes as stored JSON; no text of at most `max / 6` bytes
/// can take more (six bytes is the most one byte of text becomes).
fn fits_json(s: &str, max: usize) -> bool {
    s.len() <= max / 6 || s.chars().map(json_bytes).sum::<usize>() <= max
}

fn cut_json(s: &str, max: usize) -> String {
    let budget = max.saturating_sub('…'.len_utf8());
    let mut used = 0;
    let mut out = String::new();
    for c in s.chars() {
        used += json_bytes(c);
        if used > budget {
            break;
        }
        out.push(c);
    }
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_text_fits_its_json_budget() {
        for s in [
            "plain text ".repeat(100),
            "<&>\u{1}é\"".repeat(200),
            "x".repeat(512),
        ] {
            let cut = truncate_json(&s, 512);
            assert!(cut.chars().map(json_bytes).sum::<usize>() <= 512, "{cut}");
            assert!(cut.chars().count() <= 512);
            assert!(serde_json::to_string(&cut).expect("json").len() <= 512 + 2);
        }
        assert_eq!(truncate_json("short", 512), "short");
    }

    #[test]
    fn an_owned_text_is_cut_the_same() {
        for s in [
            "plain text ".repeat(100),
            "<&>\u{1}é\"".repeat(200),
            "x".repeat(512),
            "x".repeat(513),
            "<".repeat(85),
            "<".repeat(86),
            "<".repeat(87),
        ] {
            assert_eq!(truncate_json_owned(s.clone(), 512), truncate_json(&s, 512));
        }
        assert_eq!(truncate_json("<".repeat(85).as_str(), 512), "<".repeat(85));
        assert!(truncate_json("<".repeat(86).as_str(), 512).ends_with('…'));
    }
}
