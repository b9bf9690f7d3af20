//! The minijinja environment every render uses: strict about undefined values, HTML
//! escaping only for the html part, and bounded in steps, depth and output so that no
//! template can hang the operator or fill its memory with output.

use std::io;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};

use super::error::{OutputTooLarge, RenderError, from_minijinja};
use super::library::Library;
pub use super::limits::{FUEL, MAX_BODY_BYTES, MAX_SUBJECT_BYTES, RECURSION_LIMIT};
use super::names::{Part, join, part_name};

/// The environment for rendering `root` parts against `library`.
fn environment(library: &Library, root: Part) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_syntax(syntax());
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Debug info gives errors their byte range, from which the column is computed.
    env.set_debug(true);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION_LIMIT);
    super::bounded::install(&mut env);
    // Escaping follows the part being rendered, not file names: whatever an html part
    // includes ends up in HTML, and whatever a text part includes ends up in plain text.
    let escape = if root == Part::Html {
        AutoEscape::Html
    } else {
        AutoEscape::None
    };
    env.set_auto_escape_callback(move |_| escape.clone());
    env.set_path_join_callback(move |name, parent| join(name, parent, root).into());
    let lib = library.clone();
    env.set_loader(move |name| Ok(lib.source(name)));
    env
}

/// `trim_blocks` and `lstrip_blocks` (as Ansible users know them): a line holding only a
/// `{% tag %}` leaves no blank line or indentation behind, which plain-text mail needs.
fn syntax() -> SyntaxConfig {
    let mut builder = SyntaxConfig::builder();
    builder.trim_blocks(true).lstrip_blocks(true);
    // The default delimiters are always valid; fall back to the default config regardless.
    builder.build().unwrap_or_default()
}

/// Collects output up to a limit and refuses more, so a runaway loop fails at the limit
/// instead of after it has filled memory.
struct Capped {
    buf: Vec<u8>,
    max: usize,
}

impl io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.max {
            return Err(io::Error::other(OutputTooLarge(self.max)));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Renders one part of template `template` whose source is `source`, with `context`. A panic
/// inside the render (an argument a filter does not expect) is an error of this template,
/// never of the process.
pub fn render_part(
    library: &Library,
    template: &str,
    part: Part,
    source: &str,
    context: &Value,
) -> Result<String, RenderError> {
    let run = || render_part_unguarded(library, template, part, source, context);
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|_| {
        Err(RenderError::new(
            super::error::reasons::TEMPLATE_ERROR,
            crate::api::TemplateErrorDetail {
                template: Some(part_name(template, part)),
                message: "the renderer failed on this template (a filter given an argument far out of range?); simplify the template".into(),
                ..Default::default()
            },
        ))
    })
}

fn render_part_unguarded(
    library: &Library,
    template: &str,
    part: Part,
    source: &str,
    context: &Value,
) -> Result<String, RenderError> {
    let name = part_name(template, part);
    let source_of = |n: &str| {
        if n == name {
            Some(source.to_string())
        } else {
            library.source(n)
        }
    };
    let fail = |e: minijinja::Error| from_minijinja(&e, &name, &source_of);
    let mut env = environment(library, part);
    env.add_template_owned(name.clone(), source.to_string())
        .map_err(fail)?;
    let tmpl = env.get_template(&name).map_err(fail)?;
    let max = if part == Part::Subject {
        MAX_SUBJECT_BYTES
    } else {
        MAX_BODY_BYTES
    };
    let mut out = Capped {
        buf: Vec::new(),
        max,
    };
    tmpl.render_captured_to(context.clone(), &mut out)
        .map_err(fail)?;
    // minijinja writes str slices only, and a refused write is refused whole, so the
    // buffer is UTF-8; a lossy conversion keeps that from ever being a panic.
    Ok(String::from_utf8_lossy(&out.buf).into_owned())
}
