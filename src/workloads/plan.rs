//! What the tenant's filtering workloads should look like: running, or scaled to zero with the
//! previous replica count remembered. Pure: the controller reads the workloads and applies this.

use crate::api::{ServicePhase, TenantPhase, TenantStatus, WorkloadKind};

/// What the controller knows about one workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
    /// The `mailsec.io/product` label.
    pub product: Option<String>,
    /// `spec.replicas` (the API server defaults it to 1).
    pub replicas: Option<i32>,
    /// The `mailsec.io/suspended-replicas` annotation, when it holds a number.
    pub remembered: Option<i32>,
    /// The `mailsec.io/phase` label.
    pub phase_label: Option<String>,
}

/// The fields of a workload the operator owns, as they should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadState {
    /// `spec.replicas` to set, or `None` to leave it to its owner.
    pub replicas: Option<i32>,
    /// The remembered replica count (annotation), or `None` to have no annotation.
    pub remembered: Option<i32>,
    /// The `mailsec.io/phase` label.
    pub phase: String,
    /// Whether the workload is (to be) stopped.
    pub suspended: bool,
}

impl Workload {
    /// `namespace/name`, for messages.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether the operator has it scaled down now.
    pub fn is_suspended(&self) -> bool {
        self.remembered.is_some()
    }
}

/// The products the workloads serve (a workload without a product label serves the base
/// product), sorted, each once: every one is a service of the tenant.
pub fn products(workloads: &[Workload], base_product: &str) -> Vec<String> {
    let mut products: Vec<String> = workloads
        .iter()
        .map(|w| {
            w.product
                .clone()
                .unwrap_or_else(|| base_product.to_string())
        })
        .collect();
    products.sort_unstable();
    products.dedup();
    products
}

/// The state a workload of the tenant should be in, given the tenant's evaluated status.
/// Returns `None` when it already is (nothing to write).
///
/// Suspended when its product's service is suspended, or when the whole tenant is (the base
/// product lapsed). A workload without a product label serves the base product; one whose product
/// is not a service of the tenant follows the tenant as a whole.
pub fn desired_state(
    w: &Workload,
    status: &TenantStatus,
    base_product: &str,
) -> Option<WorkloadState> {
    let product = w.product.as_deref().unwrap_or(base_product);
    let tenant_suspended = status.phase == Some(TenantPhase::Suspended);
    let (phase, suspended) = match status.services.iter().find(|s| s.product == product) {
        Some(s) => (
            format!("{:?}", s.phase),
            tenant_suspended || s.phase == ServicePhase::Suspended,
        ),
        None => (
            status
                .phase
                .map(|p| format!("{p:?}"))
                .unwrap_or_else(|| "Unknown".into()),
            tenant_suspended,
        ),
    };
    // The label says what the workload is doing: a suspended tenant stops its add-ons too.
    let phase = if suspended {
        "Suspended".to_string()
    } else {
        phase
    };
    let state = if suspended {
        // Keep the count remembered at the first suspension: a re-apply of the original manifest
        // during suspension must not overwrite it.
        let remember = w.remembered.or(w.replicas).unwrap_or(1).max(0);
        WorkloadState {
            replicas: Some(0),
            remembered: Some(remember),
            phase,
            suspended: true,
        }
    } else {
        WorkloadState {
            replicas: w.remembered,
            remembered: None,
            phase,
            suspended: false,
        }
    };
    let unchanged = state.remembered == w.remembered
        && state.replicas.is_none_or(|r| Some(r) == w.replicas)
        && Some(&state.phase) == w.phase_label.as_ref();
    (!unchanged).then_some(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::tenant_status;

    fn wl(
        product: Option<&str>,
        replicas: Option<i32>,
        remembered: Option<i32>,
        phase: Option<&str>,
    ) -> Workload {
        Workload {
            kind: WorkloadKind::Deployment,
            namespace: "mail".into(),
            name: "filter".into(),
            product: product.map(str::to_string),
            replicas,
            remembered,
            phase_label: phase.map(str::to_string),
        }
    }

    #[test]
    fn table() {
        use ServicePhase as S;
        use TenantPhase as T;
        let active = tenant_status(T::Warning, &[("esg", S::Active), ("eti", S::Suspended)]);
        let suspended = tenant_status(T::Suspended, &[("esg", S::Suspended), ("eti", S::Active)]);
        type Want = Option<(Option<i32>, Option<i32>, &'static str)>;
        let cases: Vec<(&str, Workload, &TenantStatus, Want)> = vec![
            (
                "base running, labelled: nothing to do",
                wl(None, Some(3), None, Some("Active")),
                &active,
                None,
            ),
            (
                "base running, first sight: label only",
                wl(None, Some(3), None, None),
                &active,
                Some((None, None, "Active")),
            ),
            (
                "add-on suspended: scale to zero, remember 3",
                wl(Some("eti"), Some(3), None, Some("Active")),
                &active,
                Some((Some(0), Some(3), "Suspended")),
            ),
            (
                "add-on suspended and already down: nothing",
                wl(Some("eti"), Some(0), Some(3), Some("Suspended")),
                &active,
                None,
            ),
            (
                "re-applied to 5 while suspended: back to 0, still remember 3",
                wl(Some("eti"), Some(5), Some(3), Some("Suspended")),
                &active,
                Some((Some(0), Some(3), "Suspended")),
            ),
            (
                "whole tenant suspended stops add-ons too",
                wl(Some("eti"), Some(2), None, Some("Active")),
                &suspended,
                Some((Some(0), Some(2), "Suspended")),
            ),
            (
                "renewed: restore exactly 3, drop the annotation",
                wl(None, Some(0), Some(3), Some("Suspended")),
                &active,
                Some((Some(3), None, "Active")),
            ),
            (
                "suspended at 0 replicas remembers 0",
                wl(None, Some(0), None, None),
                &suspended,
                Some((Some(0), Some(0), "Suspended")),
            ),
            (
                "unknown product follows the tenant",
                wl(Some("other"), Some(2), None, None),
                &suspended,
                Some((Some(0), Some(2), "Suspended")),
            ),
            (
                "no replicas field counts as 1",
                wl(None, None, None, None),
                &suspended,
                Some((Some(0), Some(1), "Suspended")),
            ),
        ];
        for (name, w, st, want) in cases {
            let got = desired_state(&w, st, "esg").map(|s| (s.replicas, s.remembered, s.phase));
            let want = want.map(|(r, m, p)| (r, m, p.to_string()));
            assert_eq!(got, want, "{name}");
        }
    }
}
