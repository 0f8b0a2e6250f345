//! Table-driven tests of the tenant plan: what the controller is told to do.
