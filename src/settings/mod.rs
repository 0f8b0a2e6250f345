//! Service settings: which settings reach the filtering workloads while a service is frozen
//! ([`plan`], pure) and the ConfigMap that carries them to the workloads ([`apply`]).
pub mod apply;
pub mod plan;
