//! `kmailops run`: the controller, against the cluster in KUBECONFIG or the in-cluster account.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use crate::context::{Settings, default_instance_id};
use crate::leader::{LeaderElection, run_as_leader};
use crate::runtime::{RunConfig, run as run_controller};
use crate::send_slots::SlotLimits;
use crate::telemetry::{self, LogFormat};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "KMAILOPS_NAMESPACE")]
    pub namespace: Option<String>,
    /// Provider calls allowed at once across all Emails.
    #[arg(long, env = "KMAILOPS_MAX_CONCURRENT_SENDS", default_value_t = 16)]
    pub max_concurrent_sends: usize,
    /// Provider calls allowed at once through one EmailSenderConfig (default: half of
    /// --max-concurrent-sends), so one stuck provider cannot hold every slot.
    #[arg(long, env = "KMAILOPS_MAX_CONCURRENT_SENDS_PER_SENDER")]
    pub max_concurrent_sends_per_sender: Option<usize>,
    /// Provider calls allowed at once for the Emails of one namespace (default: three quarters
    /// of --max-concurrent-sends). Freed slots go to waiting namespaces in turn.
    #[arg(long, env = "KMAILOPS_MAX_CONCURRENT_SENDS_PER_NAMESPACE")]
    pub max_concurrent_sends_per_namespace: Option<usize>,
    /// How long EmailDeliveries are kept after their Email is deleted (e.g. 720h).
    #[arg(long, env = "KMAILOPS_DELIVERY_RETENTION", default_value = "720h", value_parser = humantime::parse_duration)]
    pub delivery_retention: Duration,
    /// How long a claimed send may take before another reconcile may call its outcome unknown.
    #[arg(long, env = "KMAILOPS_CLAIM_TTL", default_value = "2m", value_parser = humantime::parse_duration)]
    pub claim_ttl: Duration,
    /// Where to serve /metrics, /healthz and /readyz ("off" to serve nothing).
    #[arg(long, env = "KMAILOPS_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: String,
    /// Elect a leader on a Lease so that only one replica reconciles ("false" to turn off,
    /// e.g. for a single replica outside a cluster).
    #[arg(long, env = "KMAILOPS_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Namespace of the leader Lease (default: POD_NAMESPACE, else kmailops-system).
    #[arg(long, env = "KMAILOPS_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(
        long,
        env = "KMAILOPS_LEADER_ELECTION_LEASE",
        default_value = "kmailops-leader"
    )]
    pub leader_election_lease: String,
    /// Folder of built-in templates (`layouts/base.html`, ...) that EmailTemplates may
    /// include or extend; reloaded when its files change (e.g. a mounted ConfigMap).
    /// Default: `templates` in the working directory, if it exists.
    #[arg(long, env = "KMAILOPS_TEMPLATES_DIR", value_name = "DIR")]
    pub templates_dir: Option<std::path::PathBuf>,
    /// Namespaces whose `default: true` EmailSenderConfigs may serve Emails of other
    /// namespaces (those they admit). Repeatable. Default: the operator's own namespace. A
    /// tenant's `default: true` always serves its own namespace only.
    #[arg(
        long = "shared-sender-namespace",
        env = "KMAILOPS_SHARED_SENDER_NAMESPACES",
        value_delimiter = ','
    )]
    pub shared_sender_namespaces: Vec<String>,
    /// Hosts EmailSenderConfigs may name in baseUrl, ses.endpoint, smtp.host and
    /// smtp.oauth2.tokenUrl: `smtp.example.com`, `*.example.com` (hosts below it) or `*`.
    /// Repeatable. Default: any host. Senders that leave those fields unset use the
    /// providers' public endpoints, which stay allowed.
    #[arg(
        long = "allowed-endpoint",
        env = "KMAILOPS_ALLOWED_ENDPOINTS",
        value_delimiter = ',',
        value_name = "HOST_PATTERN"
    )]
    pub allowed_endpoints: Vec<String>,
    /// Log format.
    #[arg(long, env = "KMAILOPS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Threads that run the controller's tasks. Its work is mostly waiting on the API server
    /// and providers (2-3 ms of CPU per Email measured), so one keeps up with hundreds of
    /// Emails per second; more threads spend CPU waking each other, which on a busy node is
    /// taken from the API server and the rest (docs/benchmark.md, session 15). Templates are
    /// rendered in separate workers whatever this is.
    #[arg(long, env = "KMAILOPS_WORKER_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub worker_threads: u16,
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    telemetry::init(args.log_format);
    crate::provider::http::install_crypto_provider();
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes (KUBECONFIG or the in-cluster service account)")?;
    let config = RunConfig {
        settings: Settings {
            sends: {
                let derived = SlotLimits::from_total(args.max_concurrent_sends);
                SlotLimits {
                    per_sender: args
                        .max_concurrent_sends_per_sender
                        .unwrap_or(derived.per_sender),
                    per_namespace: args
                        .max_concurrent_sends_per_namespace
                        .unwrap_or(derived.per_namespace),
                    ..derived
                }
            },
            claim_ttl: args.claim_ttl.max(Duration::from_secs(10)),
            delivery_retention: args.delivery_retention,
            instance_id: default_instance_id(),
            templates_dir: crate::template::builtins::folder(args.templates_dir),
            shared_sender_namespaces: if args.shared_sender_namespaces.is_empty() {
                crate::context::shared_sender_namespaces_default()
            } else {
                args.shared_sender_namespaces
            },
            allowed_endpoints: crate::endpoints::AllowedEndpoints::new(args.allowed_endpoints),
        },
        namespace: args.namespace,
        metrics_addr: match args.metrics_addr.as_str() {
            "off" | "" => None,
            addr => Some(addr.parse().with_context(|| {
                format!("--metrics-addr {addr}: expected HOST:PORT, e.g. 0.0.0.0:8080")
            })?),
        },
    };
    if args.leader_election {
        let mut election = LeaderElection {
            lease_name: args.leader_election_lease,
            ..LeaderElection::default()
        };
        if let Some(ns) = args.leader_election_namespace {
            election.namespace = ns;
        }
        run_as_leader(client, config, election, shutdown_signal()).await?;
    } else {
        run_controller(client, config, shutdown_signal()).await?;
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutting down: finishing sends in flight");
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cli::{Cli, Command};

    fn worker_threads(args: &[&str]) -> Result<u16, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("kmailops").chain(args.iter().copied()))?;
        match cli.command {
            Command::Run(run) => Ok(run.worker_threads),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn the_controller_runs_on_one_thread_unless_told_otherwise() {
        assert_eq!(worker_threads(&["run"]).unwrap(), 1);
        assert_eq!(
            worker_threads(&["run", "--worker-threads", "4"]).unwrap(),
            4
        );
        assert!(worker_threads(&["run", "--worker-threads", "0"]).is_err());
        assert!(worker_threads(&["run", "--worker-threads", "many"]).is_err());
    }
}
