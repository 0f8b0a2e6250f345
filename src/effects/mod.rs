//! Effects of the engine's answers on the cluster: status writes, Events, workload scaling, the
//! settings ConfigMaps and the notifier's outbox. Only the controllers call these.

pub mod events;
pub mod status;

/// The field manager of every write the operator makes, except the notifier's
/// (`crate::notifications::FIELD_MANAGER`), which owns only `status.notifications`.
pub const FIELD_MANAGER: &str = "mailsec-operator";
