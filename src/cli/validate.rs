//! `kmailops validate DIR`: every kmailops manifest under a folder, checked without a
//! cluster: the CRD schema (unknown fields, required fields, enums, limits), the typed
//! structs, template syntax and rendering, references inside the folder (senderConfigRef,
//! templateRef, fallbacks, Secrets, attachments) and required variables.
//!
//! Prints one line per problem, `FILE: Kind/name: problem`, and exits 1 when there is any.

mod schema;

use std::cell::RefCell;
use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use serde::Deserialize;

use super::offline;
use crate::controllers::template::preview;
use crate::lookup::content::{Selectors, include_admission, render_content, resolve_template};
use crate::manifests::{Manifest, ManifestError, ManifestSet, files_recursive};
use crate::message::build_message;
use crate::provider::required_secrets;
use crate::template::{Builtins, Library};

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Folders (read recursively) or files.
    #[arg(value_name = "DIR", required = true)]
    pub paths: Vec<PathBuf>,
    /// Namespace of objects that name none.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Folder of built-in templates (default: `templates` in the working directory, if it
    /// exists).
    #[arg(long, env = "KMAILOPS_TEMPLATES_DIR", value_name = "DIR")]
    pub templates_dir: Option<PathBuf>,
    /// Do not require the Secrets that senders and attachments use to be in the files (for
    /// repositories that keep Secrets elsewhere, e.g. sealed or external secrets).
    #[arg(long)]
    pub skip_secrets: bool,
}

/// One finding, printed as `FILE: Kind/name: message`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Problem {
    file: String,
    object: String,
    message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.file, self.object, self.message)
    }
}

#[derive(Default)]
struct Report {
    problems: Vec<Problem>,
    warnings: Vec<String>,
    files: usize,
}

impl Report {
    fn add(&mut self, file: &str, object: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            file: file.to_string(),
            object: object.to_string(),
            message: message.into(),
        });
    }

    fn add_for<T>(&mut self, m: &Manifest<T>, kind: &str, message: impl Into<String>) {
        self.add(file_of(&m.source), &format!("{kind}/{}", m.name), message);
    }
}

/// `file (document 2)` -> `file`.
fn file_of(source: &str) -> &str {
    source
        .rsplit_once(" (document ")
        .map_or(source, |(file, _)| file)
}

pub fn run(args: &ValidateArgs) -> anyhow::Result<ExitCode> {
    let mut report = Report::default();
    let mut set = ManifestSet::default();
    for path in &args.paths {
        for file in files_recursive(path)? {
            load_file(&mut set, &file, &args.namespace, &mut report);
        }
    }
    let builtins = Arc::new(offline::builtins(args.templates_dir.clone())?);
    check_senders(&set, args.skip_secrets, &mut report);
    check_templates(&set, &builtins, &mut report);
    check_emails(&set, &builtins, args.skip_secrets, &mut report);

    report.problems.sort();
    report.problems.dedup();
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    for p in &report.problems {
        println!("{p}");
    }
    eprintln!(
        "{} file(s): {set}; {} problem(s)",
        report.files,
        report.problems.len()
    );
    Ok(if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[derive(Deserialize, Default)]
struct Head {
    #[serde(default, rename = "apiVersion")]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: HeadMeta,
}

#[derive(Deserialize, Default)]
struct HeadMeta {
    #[serde(default)]
    name: Option<String>,
}

const KINDS: &[&str] = &[
    "Email",
    "EmailSenderConfig",
    "EmailTemplate",
    "EmailDelivery",
];

/// Reads every document of one file into `set`, reporting each bad document and going on.
fn load_file(set: &mut ManifestSet, file: &std::path::Path, ns: &str, report: &mut Report) {
    report.files += 1;
    let name = file.display().to_string();
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => return report.add(&name, "-", format!("cannot read: {e}")),
    };
    for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let here = format!("document {}", i + 1);
        let value = match serde_yaml::Value::deserialize(doc) {
            Ok(v) => v,
            Err(e) => {
                // The rest of the file can not be split into documents reliably.
                report.add(&name, &here, format!("not valid YAML: {e}"));
                return;
            }
        };
        if value.is_null() {
            continue;
        }
        let head: Head = serde_yaml::from_value(value.clone()).unwrap_or_default();
        let object = match &head.metadata.name {
            Some(n) if !head.kind.is_empty() => format!("{}/{n}", head.kind),
            _ => here.clone(),
        };
        if let Some(version) = head
            .api_version
            .strip_prefix(&format!("{}/", crate::api::GROUP))
        {
            if !KINDS.contains(&head.kind.as_str()) {
                report.add(
                    &name,
                    &object,
                    format!(
                        "{} has no kind `{}`; kinds: {}",
                        crate::api::GROUP,
                        head.kind,
                        KINDS.join(", ")
                    ),
                );
                continue;
            }
            if version != crate::api::VERSION {
                report.add(
                    &name,
                    &object,
                    format!(
                        "apiVersion {} is not served; use {}/{}",
                        head.api_version,
                        crate::api::GROUP,
                        crate::api::VERSION
                    ),
                );
                continue;
            }
            if let (Some(schema), Ok(json)) =
                (schema::for_kind(&head.kind), serde_json::to_value(&value))
            {
                for p in schema::check(&json, &schema) {
                    report.add(&name, &object, p);
                }
            }
        }
        let source = format!("{name} ({here})");
        if let Err(e) = set.add_value(value, &source, ns) {
            let message = match e {
                ManifestError::Invalid { message, .. } => {
                    let prefix = format!("{}: ", head.metadata.name.as_deref().unwrap_or_default());
                    message
                        .strip_prefix(&prefix)
                        .map(str::to_string)
                        .unwrap_or(message)
                }
                other => other.to_string(),
            };
            report.add(&name, &object, message);
        }
    }
}

fn check_senders(set: &ManifestSet, skip_secrets: bool, report: &mut Report) {
    for m in &set.sender_configs {
        let spec = &m.object.spec;
        for (field, r) in required_secrets(spec) {
            if !skip_secrets && let Err(e) = set.secret_value(&m.namespace, &r.name, &r.key) {
                report.add_for(m, "EmailSenderConfig", format!("{field}: {e}"));
            }
        }
        for (i, name) in spec.fallback.iter().enumerate() {
            if set.sender_config(&m.namespace, name).is_none() {
                report.add_for(
                    m,
                    "EmailSenderConfig",
                    format!(
                        "spec.fallback[{i}]: EmailSenderConfig {}/{name} is not in the files (FallbackNotFound): add it, or remove it from spec.fallback",
                        m.namespace
                    ),
                );
            }
        }
    }
}

fn check_templates(set: &ManifestSet, builtins: &Arc<Builtins>, report: &mut Report) {
    let templates = Arc::new(offline::template_set(set));
    for m in &set.templates {
        let library = Library::new(m.namespace.clone(), templates.clone(), builtins.clone());
        if let Err(e) = preview(&library, &m.name, &m.object.spec) {
            report.add_for(m, "EmailTemplate", format!("{}: {}", e.reason, e.message));
        }
    }
}

fn check_emails(
    set: &ManifestSet,
    builtins: &Arc<Builtins>,
    skip_secrets: bool,
    report: &mut Report,
) {
    let templates = Arc::new(offline::template_set(set));
    for m in &set.emails {
        let spec = &m.object.spec;
        let mut failed = false;
        let mut fail = |report: &mut Report, message: String| {
            failed = true;
            report.add_for(m, "Email", message);
        };
        let sender = match offline::sender_chain(set, m, &mut report.warnings) {
            Ok(chain) => Some(chain.senders[0].clone()),
            Err(e) => {
                fail(report, format!("{e:#}"));
                None
            }
        };
        let notes = RefCell::new(Vec::new());
        let content = resolve_template(spec, &m.namespace, &*templates, &|t| {
            offline::template_admits(t, &m.namespace, &mut notes.borrow_mut())
        })
        .and_then(|t| {
            render_content(
                spec,
                t.as_ref(),
                templates.clone(),
                builtins.clone(),
                include_admission(&m.namespace, None, Selectors::AssumeMatch),
            )
        });
        report.warnings.extend(notes.into_inner());
        let content = match content {
            Ok(c) => Some(c),
            Err(p) => {
                fail(report, p.to_string());
                None
            }
        };
        let attachments =
            if skip_secrets && spec.attachments.iter().any(|a| a.secret_key_ref.is_some()) {
                None
            } else {
                match offline::attachments(set, m) {
                    Ok(a) => Some(a),
                    Err(e) => {
                        fail(report, format!("{e:#}"));
                        None
                    }
                }
            };
        // The checks of the message itself (addresses, headers, sizes) need all of the above.
        if let (Some(sender), Some(content), Some(attachments), false) =
            (sender, content, attachments, failed)
            && let Err(e) =
                build_message(spec, &sender.config.spec, &sender.key, content, attachments)
        {
            report.add_for(m, "Email", e.to_string());
        }
    }
}
