//! The bounds every render runs within, in one place (the engine applies them, errors name
//! them).

/// Instructions one render of one part may execute. A realistic email (a loop over a few
/// hundred order lines) needs a few ten thousand; an endless-looking loop hits this within
/// a fraction of a second.
pub const FUEL: u64 = 1_000_000;
/// Nesting of includes, extends, macros and loops. minijinja charges more than one level
/// for includes and macro calls, so this allows about ten nested templates.
pub const RECURSION_LIMIT: usize = 100;
/// Output limit of the text and html parts: the limit of an Email's literal body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Output limit of the subject part (a subject is at most 998 characters).
pub const MAX_SUBJECT_BYTES: usize = 4 * 1024;
