//! Logging: text for people, JSON for log pipelines. `RUST_LOG` filters (default `info`).

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber; a second call (tests) is a no-op.
pub fn init(format: LogFormat) {
    let mut spec = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    // kube's client logs a whole response body it could not parse, at warn: a list of Emails
    // is other tenants' recipients, bodies and variables. Our own log lines name the object
    // instead (see `tolerant`). Only an explicit RUST_LOG directive for kube_client shows it.
    if !spec.contains("kube_client") {
        spec.push_str(",kube_client::client=error");
    }
    let filter = EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
