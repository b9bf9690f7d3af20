//! `kmailops check`: run one sender's health check from manifest files, the same check the
//! operator runs, without a cluster.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::Args;

use super::offline;
use crate::manifests::ManifestSet;
use crate::provider::{build_provider, http_client};

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Manifest files or folders ("-" for standard input) holding the EmailSenderConfig and
    /// its Secret. Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// The EmailSenderConfig to check, as name or namespace/name; needed when the files
    /// hold several.
    #[arg(long, value_name = "NAME")]
    pub sender: Option<String>,
    /// Namespace of objects that name none.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Time limit, e.g. 10s; default: the config's healthCheck.timeout.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
}

/// Prints `namespace/name (Provider): State (Reason): message`; exit code 0 only when
/// the sender is Healthy.
pub async fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let set = ManifestSet::load(&args.files, &args.namespace)?;
    let config = offline::pick(
        &set.sender_configs,
        "EmailSenderConfig",
        args.sender.as_deref(),
        "--sender",
    )?;
    let spec = &config.object.spec;
    let timeout = match args.timeout {
        Some(t) => t,
        None => humantime::parse_duration(&spec.health_check.timeout).map_err(|e| {
            anyhow!(
                "EmailSenderConfig {} spec.healthCheck.timeout `{}`: {e}",
                config.key(),
                spec.health_check.timeout
            )
        })?,
    };
    let credentials = crate::lookup::credentials::load(spec, &config.namespace, &set)
        .map_err(|e| anyhow!("EmailSenderConfig {}: {e}", config.key()))?
        .credentials;
    let provider = build_provider(spec, credentials, &http_client())
        .with_context(|| format!("EmailSenderConfig {}", config.key()))?;
    let report = provider.check_health(timeout).await;
    println!("{} ({}): {report}", config.key(), provider.kind());
    Ok(if report.is_healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn go_style_durations_from_the_crd_parse() {
        for (text, secs) in [("10s", 10), ("5m", 300), ("1h30m", 5400)] {
            assert_eq!(
                humantime::parse_duration(text).map(|d| d.as_secs()),
                Ok(secs),
                "{text}"
            );
        }
    }
}
