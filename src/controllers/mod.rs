//! The three reconcilers. Each reads the shared caches through [`crate::context::Context`]
//! and owns its own state; `crate::runtime` wires them to the watches.

pub mod email;
pub mod sender;
pub mod template;
