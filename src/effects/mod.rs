//! Effects of the engine's answers on the cluster: status writes and Events (and, as the
//! operator grows, workloads and notifications). Only the controllers call these.

pub mod events;
pub mod status;

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "mailsec-operator";
