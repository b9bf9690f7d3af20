//! Bounded versions of the built-in filters whose output a template controls by an argument:
//! each computes the size of its result first and refuses what passes
//! [`MAX_STRING_BYTES`](super::limits::MAX_STRING_BYTES), then lets minijinja's own filter do
//! the work. (`*` on strings and sequences is bounded by minijinja itself.)

use minijinja::value::{Kwargs, StringInput, Value};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, State};

use super::limits::{MAX_INDENT, MAX_STRING_BYTES};

/// Puts the bounded filters in place of the built-in ones.
pub fn install(env: &mut Environment<'_>) {
    env.add_filter("indent", indent);
    env.add_filter("replace", replace);
}

fn too_large(what: &str, bytes: u128) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "{what} would build a string of {bytes} bytes, over the limit of {MAX_STRING_BYTES} bytes a template may build"
        ),
    )
}

fn indent(
    value: StringInput<'_>,
    width: Option<usize>,
    first: Option<bool>,
    blank: Option<bool>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    // Reading `width` here marks it used for the built-in's own check of the arguments.
    let width = match width {
        Some(w) => w,
        None => kwargs.get::<Option<usize>>("width")?.unwrap_or(4),
    };
    if width > MAX_INDENT {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("indent width {width} is over the limit of {MAX_INDENT}"),
        ));
    }
    let text = value.as_str();
    let lines = text.bytes().filter(|b| *b == b'\n').count() as u128 + 1;
    let size = text.len() as u128 + lines * width as u128;
    if size > MAX_STRING_BYTES as u128 {
        return Err(too_large("indent", size));
    }
    minijinja::filters::indent(value, Some(width), first, blank, kwargs)
}

fn replace(
    state: &mut State,
    value: StringInput<'_>,
    from: StringInput<'_>,
    to: StringInput<'_>,
) -> Result<Value, Error> {
    let (v, f) = (value.as_str(), from.as_str());
    let count = if f.is_empty() {
        v.chars().count() as u128 + 1
    } else {
        v.matches(f).count() as u128
    };
    // Escaping for HTML can make the replacement up to six times longer.
    let grow = if matches!(state.auto_escape(), AutoEscape::None) {
        1
    } else {
        6
    };
    let size = (v.len() as u128 + count * (to.as_str().len() as u128 * grow))
        .saturating_sub(count * f.len() as u128);
    if size > MAX_STRING_BYTES as u128 {
        return Err(too_large("replace", size));
    }
    minijinja::filters::replace(state, value, from, to)
}
