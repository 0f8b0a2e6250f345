//! Which service settings reach the filtering workloads: the spec's, except for a frozen service
//! (read-only or suspended, or the whole tenant is), which keeps its last applied settings —
//! the second line of defence behind the admission policy.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::api::{ConditionType, Reason, ServicePhase, Tenant, TenantPhase, TenantStatus};
use crate::engine::conditions::ConditionSet;

/// Settings to project, per product.
pub type ProductSettings = BTreeMap<String, Value>;

/// The settings to project and which products are held back.
#[derive(Clone, Debug, PartialEq)]
pub struct SettingsPlan {
    /// Product → settings object, as the workloads should see them.
    pub data: ProductSettings,
    /// Products whose spec settings differ from what stays in effect because they are frozen.
    pub held_back: Vec<String>,
}

/// True when `product`'s settings may not change now.
pub fn is_frozen(status: &TenantStatus, product: &str) -> bool {
    let tenant_frozen = matches!(
        status.phase,
        Some(TenantPhase::ReadOnly | TenantPhase::Suspended)
    );
    tenant_frozen
        || status
            .services
            .iter()
            .any(|s| s.product == product && s.phase >= ServicePhase::ReadOnly)
}

/// The digest of settings recorded in `status.settingsDigest`: SHA-256 of their JSON (maps are
/// sorted, so equal settings give equal digests).
pub fn digest(settings: &ProductSettings) -> String {
    use sha2::{Digest, Sha256};
    let json = serde_json::to_vec(settings).unwrap_or_default();
    hex::encode(Sha256::digest(&json))
}

/// The longest `status.settingsInEffect` (the schema's bound).
pub const MAX_SETTINGS_IN_EFFECT: usize = 8 * 1024;

/// Where the settings in effect now are known from.
#[derive(Clone, Debug, PartialEq)]
pub enum InEffect {
    /// The spec itself: every change of it has been applied (`settingsAppliedGeneration` is
    /// the current generation), so it is what the workloads see.
    Spec,
    /// Recorded in status (`settingsInEffect`), or a copy (a settings ConfigMap) whose digest is
    /// the one recorded in status.
    Known(ProductSettings),
    /// A change is held back, the settings were too large to record and no copy matches the
    /// recorded digest (every copy was edited by hand): nothing is written.
    Unknown,
}

/// The settings in effect now, from a source an editor of the tenant can not forge: the spec
/// while nothing is held back; else `status.settingsInEffect`; else the copy that matches
/// `status.settingsDigest` (a copy edited by hand does not). `copies` are the tenant's settings
/// ConfigMaps, read. Before anything was recorded (an operator of an earlier version), the
/// first copy, as then.
pub fn in_effect(tenant: &Tenant, copies: &[ProductSettings]) -> InEffect {
    let status = tenant.status.as_ref();
    let applied_generation = status.and_then(|s| s.settings_applied_generation);
    if applied_generation.is_some() && applied_generation == tenant.metadata.generation {
        return InEffect::Spec;
    }
    if let Some(recorded) = status
        .and_then(|s| s.settings_in_effect.as_deref())
        .and_then(|json| serde_json::from_str::<ProductSettings>(json).ok())
    {
        return InEffect::Known(recorded);
    }
    match status.and_then(|s| s.settings_digest.as_deref()) {
        Some(recorded) => copies
            .iter()
            .find(|c| digest(c) == recorded)
            .map_or(InEffect::Unknown, |c| InEffect::Known(c.clone())),
        None => copies
            .first()
            .map_or(InEffect::Spec, |c| InEffect::Known(c.clone())),
    }
}

/// Records the settings the workloads see from now on: their digest, and themselves while they
/// fit in [`MAX_SETTINGS_IN_EFFECT`].
pub fn record_in_effect(status: &mut TenantStatus, settings: &ProductSettings) {
    status.settings_digest = Some(digest(settings));
    status.settings_in_effect = serde_json::to_string(settings)
        .ok()
        .filter(|json| json.len() <= MAX_SETTINGS_IN_EFFECT);
}

/// Plans the projection from the tenant's spec, its evaluated status and what is applied now
/// (`None` when nothing was ever projected).
pub fn plan(
    tenant: &Tenant,
    status: &TenantStatus,
    applied: Option<&ProductSettings>,
) -> SettingsPlan {
    let mut data = ProductSettings::new();
    let mut held_back = Vec::new();
    for svc in &tenant.spec.services {
        let wanted = Value::Object(svc.settings.clone().into_iter().collect());
        let value = match applied {
            // A frozen service keeps what is in effect: nothing, for one added (or removed and
            // added back) while frozen, so new settings never slip in that way.
            Some(applied) if is_frozen(status, &svc.product) => {
                let old = applied
                    .get(svc.product.as_ref())
                    .cloned()
                    .unwrap_or_else(|| Value::Object(Default::default()));
                if old != wanted {
                    held_back.push(svc.product.to_string());
                }
                old
            }
            _ => wanted,
        };
        data.insert(svc.product.to_string(), value);
    }
    SettingsPlan { data, held_back }
}

/// Records the plan in the tenant's status: `settingsAppliedGeneration` (lags behind while settings
/// are held back) and the `SettingsApplied` condition.
pub fn record(
    status: &mut TenantStatus,
    tenant: &Tenant,
    plan: &SettingsPlan,
    previous: Option<&TenantStatus>,
    now: DateTime<Utc>,
) {
    let generation = tenant.metadata.generation;
    let prev_conditions = previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
    let mut set = ConditionSet::new(prev_conditions, generation, now);
    if plan.held_back.is_empty() {
        status.settings_applied_generation = generation;
        set.set(
            ConditionType::SettingsApplied,
            true,
            Reason::Applied,
            "The workloads see the settings of this generation",
        );
    } else {
        status.settings_applied_generation = previous.and_then(|p| p.settings_applied_generation);
        let why: Vec<String> = plan
            .held_back
            .iter()
            .map(|p| match status.services.iter().find(|s| &s.product == p) {
                Some(s) => format!(
                    "{p} is {:?}{}",
                    s.phase,
                    s.read_only_since
                        .map(|t| format!(" since {}", crate::engine::human_from(t)))
                        .unwrap_or_default()
                ),
                None => format!("{p} is frozen"),
            })
            .collect();
        set.set(
            ConditionType::SettingsApplied,
            false,
            Reason::SettingsFrozen,
            format!("Changed settings are not applied while read-only: {}. The last applied settings stay in effect; renew the subscription to apply the change", why.join("; ")),
        );
    }
    let condition = set.finish();
    status
        .conditions
        .retain(|c| !c.is(ConditionType::SettingsApplied));
    status.conditions.extend(condition);
}

/// Records that the settings in effect are not known ([`InEffect::Unknown`]): nothing is
/// written, `SettingsApplied=False` with reason `SettingsTampered`, what was recorded left as it
/// was.
pub fn record_unknown(
    status: &mut TenantStatus,
    tenant: &Tenant,
    previous: Option<&TenantStatus>,
    now: DateTime<Utc>,
) {
    status.settings_digest = previous.and_then(|p| p.settings_digest.clone());
    status.settings_in_effect = previous.and_then(|p| p.settings_in_effect.clone());
    record_not_applied(
        status,
        tenant,
        previous,
        now,
        Reason::SettingsTampered,
        "Changes are held back while read-only, and every copy of the settings ConfigMap was \
         edited by hand since: the settings in effect are not known, so none are written. \
         Renewing the subscription applies the spec's settings again"
            .to_string(),
    );
}

/// Records that the settings could not be written everywhere (e.g. a workload namespace that
/// does not exist): `SettingsApplied=False` with reason `ProjectionFailed`, and the applied
/// generation left as it was.
pub fn record_failures(
    status: &mut TenantStatus,
    tenant: &Tenant,
    failures: &[String],
    previous: Option<&TenantStatus>,
    now: DateTime<Utc>,
) {
    record_not_applied(
        status,
        tenant,
        previous,
        now,
        Reason::ProjectionFailed,
        format!(
            "The settings ConfigMap could not be written: {}; retried every minute",
            failures.join("; ")
        ),
    );
}

/// `SettingsApplied=False` with `reason`, the applied generation left as it was.
fn record_not_applied(
    status: &mut TenantStatus,
    tenant: &Tenant,
    previous: Option<&TenantStatus>,
    now: DateTime<Utc>,
    reason: Reason,
    message: String,
) {
    let prev_conditions = previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
    let mut set = ConditionSet::new(prev_conditions, tenant.metadata.generation, now);
    status.settings_applied_generation = previous.and_then(|p| p.settings_applied_generation);
    set.set(ConditionType::SettingsApplied, false, reason, message);
    status
        .conditions
        .retain(|c| !c.is(ConditionType::SettingsApplied));
    status.conditions.extend(set.finish());
}

/// Records that the settings were deliberately not written somewhere (a listed namespace the
/// platform has not assigned to the tenant, a ConfigMap of that name the operator did not
/// create): `SettingsApplied=False` with `reason` and `message`, the applied generation left as
/// it was.
pub fn record_not_written(
    status: &mut TenantStatus,
    tenant: &Tenant,
    reason: Reason,
    message: String,
    previous: Option<&TenantStatus>,
    now: DateTime<Utc>,
) {
    record_not_applied(status, tenant, previous, now, reason, message);
}

#[cfg(test)]
mod tests {

    /// While the whole tenant is frozen, a service added (or removed and added back) projects
    /// nothing new: its settings are held back like the others'.
    #[test]
    fn a_service_added_while_frozen_is_frozen_too() {
        let mut t =
            crate::fixtures::tenant("acme", &["email-safeguard", "email-threat-isolation"], 1);
        t.spec.services[1]
            .settings
            .insert("isolate".into(), serde_json::json!("all"));
        let status = TenantStatus {
            phase: Some(TenantPhase::ReadOnly),
            ..Default::default()
        };
        let applied: ProductSettings =
            [("email-safeguard".to_string(), serde_json::json!({}))].into();
        let p = plan(&t, &status, Some(&applied));
        assert_eq!(p.data["email-threat-isolation"], serde_json::json!({}));
        assert_eq!(p.held_back, ["email-threat-isolation"]);
        // Not frozen: the spec applies.
        let active = TenantStatus {
            phase: Some(TenantPhase::Active),
            ..Default::default()
        };
        let p = plan(&t, &active, Some(&applied));
        assert_eq!(
            p.data["email-threat-isolation"],
            serde_json::json!({"isolate": "all"})
        );
        assert!(p.held_back.is_empty());
    }

    /// The settings in effect come from the spec while nothing is held back, else from the
    /// status, else from a copy that matches the recorded digest; a copy edited by hand is never
    /// trusted.
    #[test]
    fn the_settings_in_effect_are_never_read_from_a_forged_copy() {
        let mut t = crate::fixtures::tenant("acme", &["email-safeguard"], 1);
        t.metadata.generation = Some(3);
        let five: ProductSettings = [(
            "email-safeguard".to_string(),
            serde_json::json!({"spamThreshold": 5}),
        )]
        .into();
        let one: ProductSettings = [(
            "email-safeguard".to_string(),
            serde_json::json!({"spamThreshold": 1}),
        )]
        .into();
        let mut status = TenantStatus {
            settings_applied_generation: Some(3),
            ..Default::default()
        };
        record_in_effect(&mut status, &five);
        t.status = Some(status.clone());
        assert_eq!(
            in_effect(&t, std::slice::from_ref(&one)),
            InEffect::Spec,
            "nothing held back"
        );

        t.metadata.generation = Some(4); // a change held back
        assert_eq!(
            in_effect(&t, std::slice::from_ref(&one)),
            InEffect::Known(five.clone()),
            "from status"
        );

        status.settings_in_effect = None; // too large to record: the digest decides
        t.status = Some(status.clone());
        assert_eq!(
            in_effect(&t, &[one.clone(), five.clone()]),
            InEffect::Known(five.clone())
        );
        assert_eq!(
            in_effect(&t, std::slice::from_ref(&one)),
            InEffect::Unknown,
            "every copy forged"
        );

        status.settings_digest = None; // recorded by an earlier version: the first copy, as then
        t.status = Some(status);
        assert_eq!(
            in_effect(&t, std::slice::from_ref(&one)),
            InEffect::Known(one)
        );
    }

    use super::*;
    use crate::fixtures::{tenant, tenant_status};
    use serde_json::json;

    fn with_settings(products: &[(&str, Value)]) -> Tenant {
        let mut t = tenant(
            "acme",
            &products.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            1,
        );
        for (svc, (_, v)) in t.spec.services.iter_mut().zip(products) {
            svc.settings = v
                .as_object()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .collect();
        }
        t
    }

    #[test]
    fn frozen_services_keep_their_last_applied_settings() {
        use ServicePhase as S;
        let t = with_settings(&[
            ("email-safeguard", json!({"spam": 7})),
            ("email-threat-isolation", json!({"isolate": false})),
        ]);
        let applied: ProductSettings = [
            ("email-safeguard".to_string(), json!({"spam": 5})),
            (
                "email-threat-isolation".to_string(),
                json!({"isolate": true}),
            ),
        ]
        .into();

        // Active: everything from the spec.
        let p = plan(
            &t,
            &tenant_status(
                TenantPhase::Active,
                &[
                    ("email-safeguard", S::Active),
                    ("email-threat-isolation", S::Active),
                ],
            ),
            Some(&applied),
        );
        assert_eq!(p.data["email-safeguard"], json!({"spam": 7}));
        assert!(p.held_back.is_empty());

        // Only the add-on frozen.
        let st = tenant_status(
            TenantPhase::Warning,
            &[
                ("email-safeguard", S::Active),
                ("email-threat-isolation", S::ReadOnly),
            ],
        );
        let p = plan(&t, &st, Some(&applied));
        assert_eq!(p.data["email-safeguard"], json!({"spam": 7}));
        assert_eq!(p.data["email-threat-isolation"], json!({"isolate": true}));
        assert_eq!(p.held_back, vec!["email-threat-isolation".to_string()]);

        // The whole tenant read-only freezes every service.
        let st = tenant_status(
            TenantPhase::ReadOnly,
            &[
                ("email-safeguard", S::ReadOnly),
                ("email-threat-isolation", S::Active),
            ],
        );
        let p = plan(&t, &st, Some(&applied));
        assert_eq!(p.data, applied);
        assert_eq!(p.held_back.len(), 2);

        // Nothing applied yet: the spec is projected even when frozen.
        let p = plan(&t, &st, None);
        assert_eq!(p.data["email-safeguard"], json!({"spam": 7}));
        assert!(p.held_back.is_empty());
    }

    #[test]
    fn applied_generation_lags_while_held_back() {
        let mut t = with_settings(&[("email-safeguard", json!({"spam": 7}))]);
        t.metadata.generation = Some(4);
        let now = DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")
            .expect("instant")
            .with_timezone(&Utc);
        let previous = TenantStatus {
            settings_applied_generation: Some(3),
            ..Default::default()
        };
        let mut st = tenant_status(
            TenantPhase::ReadOnly,
            &[("email-safeguard", ServicePhase::ReadOnly)],
        );
        let held = SettingsPlan {
            data: ProductSettings::new(),
            held_back: vec!["email-safeguard".into()],
        };
        record(&mut st, &t, &held, Some(&previous), now);
        assert_eq!(st.settings_applied_generation, Some(3));
        let c = crate::api::condition::find(&st.conditions, ConditionType::SettingsApplied)
            .expect("condition");
        assert_eq!(
            (c.status, &*c.reason),
            (crate::api::ConditionStatus::False, "SettingsFrozen")
        );
        assert!(c.message.contains("renew"), "{}", c.message);

        let applied = SettingsPlan {
            data: ProductSettings::new(),
            held_back: vec![],
        };
        record(&mut st, &t, &applied, Some(&previous), now);
        assert_eq!(st.settings_applied_generation, Some(4));
        assert_eq!(
            st.conditions
                .iter()
                .filter(|c| c.is(ConditionType::SettingsApplied))
                .count(),
            1
        );
    }
}
