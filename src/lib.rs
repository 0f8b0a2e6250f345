//! mailsec-operator: the licensing lifecycle of a multi-tenant email-security service on Kubernetes.
//!
//! Layers, in the direction data flows:
//! [`api`] types → pure [`engine`] → [`controller`]s → [`effects`] (status, events, outbox) →
//! [`cli`]; [`notify`] holds the notification texts, the outbox planning and the channels.

pub mod api;
pub mod cli;
pub mod controller;
pub mod effects;
pub mod engine;
pub mod fixtures;
pub mod manifests;
pub mod metrics;
pub mod notify;
pub mod server;
pub mod telemetry;
