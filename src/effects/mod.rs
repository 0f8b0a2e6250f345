//! Effects of the engine's answers on the cluster: status writes, Events and the notifier's
//! outbox (and, as the operator grows, workloads). Only the controllers call these.

pub mod events;
pub mod notifications;
pub mod status;

/// The field manager of every write the operator makes, except the notifier's
/// (`crate::notify::FIELD_MANAGER`), which owns only `status.notifications`.
pub const FIELD_MANAGER: &str = "mailsec-operator";
