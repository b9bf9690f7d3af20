//! `kmailops render`: one Email rendered from manifest files the way the operator renders
//! it (template, includes, built-ins, overrides), without a cluster.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use clap::{Args, ValueEnum};

use super::offline;
use crate::api::EmailSenderConfigSpec;
use crate::manifests::{ManifestSet, files_recursive};
use crate::message::{OutgoingMessage, build_message};
use crate::template::Variables;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The subject and recipients, a blank line, then the plain-text body.
    Text,
    /// The HTML body (redirect it to a file and open it in a browser).
    Html,
    /// The whole RFC 5322 message as SMTP would send it; without an EmailSenderConfig in the
    /// files, From is a placeholder (said so on standard error).
    Eml,
}

#[derive(Args, Debug)]
pub struct RenderArgs {
    /// Manifest files or folders ("-" for standard input) holding the Email, its
    /// EmailTemplate(s) and, for --format eml, its EmailSenderConfig. Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Read folders given with -f recursively.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// The Email to render, as name or namespace/name; needed when the files hold several.
    #[arg(long, value_name = "NAME")]
    pub email: Option<String>,
    /// A YAML or JSON object of variables that override the Email's spec.variables.
    #[arg(long, value_name = "FILE")]
    pub vars: Option<PathBuf>,
    /// What to print.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Namespace of objects that name none.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Folder of built-in templates (default: `templates` in the working directory, if it
    /// exists).
    #[arg(long, env = "KMAILOPS_TEMPLATES_DIR", value_name = "DIR")]
    pub templates_dir: Option<PathBuf>,
}

/// Prints the chosen part on standard output; warnings and errors go to standard error.
pub async fn run(args: &RenderArgs) -> anyhow::Result<ExitCode> {
    let mut files = Vec::new();
    for f in &args.files {
        if args.recursive && f.is_dir() {
            files.extend(files_recursive(f)?);
        } else {
            files.push(f.clone());
        }
    }
    let set = ManifestSet::load(&files, &args.namespace)?;
    let email = offline::pick(&set.emails, "Email", args.email.as_deref(), "--email")?;
    let mut spec = email.object.spec.clone();
    if let Some(path) = &args.vars {
        let extra = read_vars(path)?;
        spec.variables
            .get_or_insert_with(Default::default)
            .extend(extra);
    }
    let mut warnings = Vec::new();
    let builtins = offline::builtins(args.templates_dir.clone())?;
    let content = offline::content(&set, email, &spec, builtins, &mut warnings)?;

    // The sender gives From and a default Reply-To; a template author without one still
    // sees the message, with a placeholder From.
    let mut sender_notes = Vec::new();
    let sender =
        offline::sender_chain(&set, email, &mut sender_notes).map(|chain| chain.senders[0].clone());
    let placeholder = placeholder_sender();
    let (sender_spec, sender_key) = match &sender {
        Ok(s) => (&s.config.spec, s.key.as_str()),
        Err(_) => (&placeholder, PLACEHOLDER_KEY),
    };
    let output: Vec<u8> = match args.format {
        Format::Text | Format::Html => {
            let (part, name, other) = match args.format {
                Format::Text => (content.text.clone(), "text", "html"),
                _ => (content.html.clone(), "html", "text"),
            };
            let body = body(part, name, other)?;
            // The same checks as a send (recipients, a one-line subject, headers).
            let msg = build_message(&spec, sender_spec, sender_key, content, Vec::new())
                .with_context(|| format!("Email {}", email.key()))?;
            if args.format == Format::Text {
                let mut out = summary(&msg, sender.is_ok()).into_bytes();
                out.extend(body);
                out
            } else {
                body
            }
        }
        Format::Eml => {
            warnings.extend(sender_notes);
            if let Err(why) = &sender {
                warnings.push(format!(
                    "no EmailSenderConfig for Email {} in the files ({why}); From is the placeholder {PLACEHOLDER_FROM}",
                    email.key()
                ));
            }
            let attachments = offline::attachments(&set, email)?;
            let msg = build_message(&spec, sender_spec, sender_key, content, attachments)
                .with_context(|| format!("Email {}", email.key()))?;
            crate::provider::smtp::rfc5322(&msg)
                .map_err(|e| anyhow!("Email {}: {}", email.key(), e.message))?
        }
    };
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&output)?;
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// From when a sender config is in the files, then Subject and every recipient, one header a
/// line as in a message, and the blank line that ends a header block.
fn summary(msg: &OutgoingMessage, with_from: bool) -> String {
    let mut out = String::new();
    if with_from {
        out.push_str(&format!("From: {}\n", msg.from));
    }
    if let Some(reply_to) = &msg.reply_to {
        out.push_str(&format!("Reply-To: {reply_to}\n"));
    }
    for (name, list) in [("To", &msg.to), ("Cc", &msg.cc), ("Bcc", &msg.bcc)] {
        if !list.is_empty() {
            let joined: Vec<String> = list.iter().map(ToString::to_string).collect();
            out.push_str(&format!("{name}: {}\n", joined.join(", ")));
        }
    }
    out.push_str(&format!("Subject: {}\n\n", msg.subject));
    out
}

const PLACEHOLDER_FROM: &str = "sender@example.invalid";
const PLACEHOLDER_KEY: &str = "(no sender config)";

/// Stands in for an EmailSenderConfig when the files hold none: only its From is used.
fn placeholder_sender() -> EmailSenderConfigSpec {
    serde_json::from_value(serde_json::json!({"sender": {"address": PLACEHOLDER_FROM}}))
        .expect("a sender address is all an EmailSenderConfigSpec needs")
}

/// A body with a final line break (so a terminal prompt starts on its own line).
fn body(part: Option<String>, name: &str, other: &str) -> anyhow::Result<Vec<u8>> {
    let Some(mut text) = part else {
        bail!("the Email has no {name} body; try --format {other}");
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text.into_bytes())
}

fn read_vars(path: &PathBuf) -> anyhow::Result<Variables> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_yaml::from_str::<Variables>(&text).with_context(|| {
        format!(
            "{}: --vars needs a YAML or JSON object of variables, e.g. `order_id: 10045`",
            path.display()
        )
    })
}
