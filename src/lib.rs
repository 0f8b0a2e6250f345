//! mailsec-operator: the licensing lifecycle of a multi-tenant email-security service on Kubernetes.
//!
//! Layers, in the direction data flows:
//! [`api`] types → pure [`engine`] → [`controller`]s → [`effects`] (status, Events) → [`cli`].
//! Each feature beside the engine holds its pure part and its writes together:
//! [`workloads`] (scaling), [`settings`] (the settings ConfigMaps), [`notifications`] (texts,
//! outbox, channels; the delivering controller is [`controller::notifier`]).

pub mod allocator;
pub mod api;
pub mod cli;
pub mod controller;
pub mod effects;
pub mod engine;
#[cfg(any(test, feature = "test-support"))]
pub mod fixtures;
pub mod manifests;
pub mod metrics;
pub mod notifications;
pub mod server;
pub mod settings;
pub mod telemetry;
pub mod workloads;
