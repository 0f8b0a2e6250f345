//! The tenant's filtering workloads (Deployments, StatefulSets): what they should look like for
//! each service phase ([`plan`], pure) and the writes that make them so ([`apply`]).
pub mod apply;
pub mod plan;
pub mod release;
