//! `kmailops send`: send one Email from manifest files through the same message and
//! provider code the operator uses, without a cluster.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;

use super::offline;
use crate::manifests::ManifestSet;
use crate::message::build_message;
use crate::provider::{build_provider, http_client};

#[derive(Args, Debug)]
pub struct SendArgs {
    /// Manifest files or folders ("-" for standard input) holding the Email, its
    /// EmailSenderConfig, its EmailTemplates and the Secrets (stringData or base64 data)
    /// they use. Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// The Email to send, as name or namespace/name; needed when the files hold several.
    #[arg(long, value_name = "NAME")]
    pub email: Option<String>,
    /// Namespace of objects that name none.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Folder of built-in templates for templated Emails (default: `templates` in the
    /// working directory, if it exists).
    #[arg(long, env = "KMAILOPS_TEMPLATES_DIR", value_name = "DIR")]
    pub templates_dir: Option<PathBuf>,
}

/// Prints the provider's message id on standard output when the provider accepts the
/// message; everything else goes to standard error. Exit code 1 on any failure.
pub async fn run(args: &SendArgs) -> anyhow::Result<ExitCode> {
    let set = ManifestSet::load(&args.files, &args.namespace)?;
    let email = offline::pick(&set.emails, "Email", args.email.as_deref(), "--email")?;
    let spec = &email.object.spec;
    let now = jiff::Timestamp::now();
    // The same replay guard as the operator: a notAfter in the past means never send.
    if let Some(not_after) = spec.not_after.as_ref().filter(|t| t.0 <= now) {
        bail!(
            "Email {}: spec.notAfter ({}) has passed, so it is not sent (Expired)",
            email.key(),
            not_after.0
        );
    }
    let mut warnings = Vec::new();
    if let Some(send_at) = spec.send_at.as_ref().filter(|t| t.0 > now) {
        warnings.push(format!(
            "spec.sendAt is {}; `kmailops send` sends now",
            send_at.0
        ));
    }
    let chain = offline::sender_chain(&set, email, &mut warnings)?;
    let (config, credentials) = offline::ready_sender(&set, &chain)?;
    let attachments = offline::attachments(&set, email)?;
    let builtins = offline::builtins(args.templates_dir.clone())?;
    let content = offline::content(&set, email, spec, builtins, &mut warnings)?;
    // Tied to the operator's first delivery of this Email: a provider that deduplicates sends
    // it once, by whichever path.
    let msg = build_message(spec, &config.config.spec, &config.key, content, attachments)
        .with_context(|| format!("Email {}", email.key()))?
        .for_delivery(&email.namespace, &email.name, None);
    let provider = build_provider(&config.config.spec, credentials, &http_client())
        .with_context(|| format!("EmailSenderConfig {}", config.key))?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    eprintln!(
        "sending Email {} through {} ({}), deliveryHash {}",
        email.key(),
        config.key,
        provider.kind(),
        msg.delivery_hash
    );
    match provider.send(&msg).await {
        Ok(receipt) => {
            for w in &receipt.warnings {
                eprintln!("warning: {w}");
            }
            println!("{}", receipt.message_id);
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            let mut class = err.class.to_string();
            if err.auth {
                class.push_str(", credentials refused");
            }
            if let Some(status) = err.status {
                class.push_str(&format!(", status {status}"));
            }
            if let Some(wait) = err.retry_after {
                class.push_str(&format!(", retry after {}s", wait.as_secs()));
            }
            eprintln!("error: send failed ({class}): {}", err.message);
            Ok(ExitCode::FAILURE)
        }
    }
}
