//! EmailTemplates: minijinja sources for subject, text and html, rendered strictly and
//! within limits, plus the operator's built-in templates.
//!
//! # Rendering
//! - An undefined variable is an error naming it, with template part, line and column.
//! - Only the html part is HTML-escaped (everything it includes too); text and subject are
//!   not.
//! - Steps ([`engine::FUEL`]), nesting ([`engine::RECURSION_LIMIT`]) and output size
//!   ([`engine::MAX_BODY_BYTES`]) are bounded, so a runaway template fails fast with an
//!   error that says which limit it hit.
//! - Declared variables: defaults apply, the given values override them, and a required
//!   variable that is neither given nor defaulted is an error naming it.
//!
//! # Names in `{% include %}` and `{% extends %}`
//! See [`names`]: `base` (EmailTemplate `base` of the same namespace, same part),
//! `base/html` (a given part), `layouts/base.html` (a built-in file).
//!
//! - Memory: the `kmailops` binary renders in worker processes whose memory is capped
//!   ([`worker::MEMORY_LIMIT_BYTES`]), since minijinja's `*` and `~` build strings no filter
//!   wrapper sees; see [`isolation`].

pub mod bounded;
pub mod builtins;
pub mod engine;
pub mod error;
pub mod isolation;
pub mod library;
pub mod limits;
pub mod line;
pub mod names;
mod overruns;
pub mod render;
pub mod sandbox;
pub mod worker;

pub use builtins::{Builtins, SharedBuiltins};
pub use error::{RenderError, reasons};
pub use library::{Library, TemplateLookup, TemplateSet};
pub use names::Part;
pub use render::{Variables, render};

#[cfg(test)]
mod tests;
