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
/// Largest string a filter may build inside a render. Fuel bounds steps, not memory: without
/// this, one `indent` or `replace` could ask for gigabytes (or abort the process).
pub const MAX_STRING_BYTES: usize = 4 * 1024 * 1024;
/// Widest `indent`.
pub const MAX_INDENT: usize = 1024;
/// Wall-clock budget of one render, off the async runtime; steps are bounded by fuel, this
/// bounds what a step can cost.
pub const RENDER_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);
/// Renders running at once, so renders never take every thread of the blocking pool.
pub const MAX_CONCURRENT_RENDERS: usize = 4;
