//! Effects of the engine's answers on the cluster: status writes, Events, workload scaling and the
//! settings ConfigMaps. Only the controllers call these.

pub mod events;
pub mod settings;
pub mod status;
pub mod workloads;

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "mailsec-operator";
