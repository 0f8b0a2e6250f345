//! Which service settings reach the filtering workloads: the spec's, except for a frozen service
//! (read-only or suspended, or the whole tenant is), which keeps its last applied settings —
//! the second line of defence behind the admission policy.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::conditions::ConditionSet;
use crate::api::{ServicePhase, Tenant, TenantPhase, TenantStatus};

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
        let kept = applied.and_then(|a| a.get(&svc.product));
        let value = match kept {
            Some(old) if is_frozen(status, &svc.product) => {
                if *old != wanted {
                    held_back.push(svc.product.clone());
                }
                old.clone()
            }
            _ => wanted,
        };
        data.insert(svc.product.clone(), value);
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
            "SettingsApplied",
            true,
            "Applied",
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
                        .map(|t| format!(" since {}", super::human_from(t)))
                        .unwrap_or_default()
                ),
                None => format!("{p} is frozen"),
            })
            .collect();
        set.set(
            "SettingsApplied",
            false,
            "SettingsFrozen",
            format!("Changed settings are not applied while read-only: {}. The last applied settings stay in effect; renew the subscription to apply the change", why.join("; ")),
        );
    }
    let condition = set.finish();
    status.conditions.retain(|c| c.type_ != "SettingsApplied");
    status.conditions.extend(condition);
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
    let prev_conditions = previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
    let mut set = ConditionSet::new(prev_conditions, tenant.metadata.generation, now);
    status.settings_applied_generation = previous.and_then(|p| p.settings_applied_generation);
    set.set(
        "SettingsApplied",
        false,
        "ProjectionFailed",
        format!(
            "The settings ConfigMap could not be written: {}; retried every minute",
            failures.join("; ")
        ),
    );
    status.conditions.retain(|c| c.type_ != "SettingsApplied");
    status.conditions.extend(set.finish());
}

/// Records that the settings were deliberately not written somewhere (a listed namespace the
/// platform has not assigned to the tenant, a ConfigMap of that name the operator did not
/// create): `SettingsApplied=False` with `reason` and `message`, the applied generation left as
/// it was.
pub fn record_not_written(
    status: &mut TenantStatus,
    tenant: &Tenant,
    reason: &str,
    message: String,
    previous: Option<&TenantStatus>,
    now: DateTime<Utc>,
) {
    let prev_conditions = previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
    let mut set = ConditionSet::new(prev_conditions, tenant.metadata.generation, now);
    status.settings_applied_generation = previous.and_then(|p| p.settings_applied_generation);
    set.set("SettingsApplied", false, reason, message);
    status.conditions.retain(|c| c.type_ != "SettingsApplied");
    status.conditions.extend(set.finish());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::tenant;
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

    fn status(tenant: TenantPhase, services: &[(&str, ServicePhase)]) -> TenantStatus {
        TenantStatus {
            phase: Some(tenant),
            services: services
                .iter()
                .map(|(p, ph)| crate::api::ServiceStatus {
                    product: p.to_string(),
                    base: *p == "email-safeguard",
                    phase: *ph,
                    subscription: None,
                    plan: None,
                    effective_end_at: None,
                    expiring_soon_at: None,
                    read_only_since: None,
                    suspends_at: None,
                    missing_since: None,
                })
                .collect(),
            ..Default::default()
        }
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
            &status(
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
        let st = status(
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
        let st = status(
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
        let mut st = status(
            TenantPhase::ReadOnly,
            &[("email-safeguard", ServicePhase::ReadOnly)],
        );
        let held = SettingsPlan {
            data: ProductSettings::new(),
            held_back: vec!["email-safeguard".into()],
        };
        record(&mut st, &t, &held, Some(&previous), now);
        assert_eq!(st.settings_applied_generation, Some(3));
        let c = crate::api::condition::find(&st.conditions, "SettingsApplied").expect("condition");
        assert_eq!(
            (c.status, c.reason.as_str()),
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
                .filter(|c| c.type_ == "SettingsApplied")
                .count(),
            1
        );
    }
}
