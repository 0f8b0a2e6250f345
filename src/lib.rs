//! mailsec-operator: the licensing lifecycle of a multi-tenant email-security service on Kubernetes.
//!
//! Layers, in the direction data flows: [`api`] types → pure [`engine`] → CLI ([`cli`]).

pub mod api;
pub mod cli;
pub mod engine;
pub mod fixtures;
pub mod manifests;
