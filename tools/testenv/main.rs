//! `kmailops-testenv`: helpers that make the local test API server (apiextensions-apiserver on
//! etcd, see `scripts/k8s-testenv.sh`) usable by programs, for `scripts/demo.sh`.
//!
//! That server serves CRDs only: no `/api/v1`, so no Secrets, and no discovery (kubectl
//! `apply` does not work there). This tool fills the gaps the demo needs:
//!
//! - `apply -f PATH...`: server-side applies manifests (kmailops kinds, Secrets, ConfigMaps)
//!   through the tests' Secret/ConfigMap stand-in shim;
//! - `emails -n NS`: waits until every Email of a namespace rests, then prints a table;
//! - `serve --out KUBECONFIG`: a loopback proxy in front of the server that applies the same
//!   shim, so an unchanged `kmailops run` can watch Secrets there.
//!
//! It is a development tool (a cargo example target), never part of the shipped binary.

// The tests' shim, used as it is so the demo rewrites exactly what the tests do.
#[allow(dead_code, unused_imports)]
#[path = "../../tests/support/core_standin.rs"]
mod core_standin;

#[path = "../../tests/support/api_proxy.rs"]
mod api_proxy;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::client::ClientBuilder;
use kube::{Api, Client, Config};
use serde::Deserialize;

use core_standin::CoreStandInLayer;
use kmailops::api::{Email, EmailPhase};

#[derive(Parser)]
#[command(
    name = "kmailops-testenv",
    about = "Helpers for the local test API server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Server-side apply manifests (files or folders, recursively).
    Apply {
        #[arg(short = 'f', long = "filename", required = true)]
        paths: Vec<PathBuf>,
    },
    /// Serve the API on a loopback port with Secrets and ConfigMaps mapped to stand-ins, and
    /// write a kubeconfig for it; runs until stopped.
    Serve {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Where to write the kubeconfig that points at this proxy.
        #[arg(long)]
        out: PathBuf,
    },
    /// Wait until every Email in a namespace rests, then print them.
    Emails {
        #[arg(short, long)]
        namespace: String,
        /// Give up waiting after this many seconds (the table is printed anyway).
        #[arg(long, default_value_t = 60)]
        wait_seconds: u64,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let result = async {
        let client = shim_client().await?;
        match cli.command {
            Command::Apply { paths } => apply(&client, &paths).await,
            Command::Serve { listen, out } => serve(client, listen, &out).await,
            Command::Emails {
                namespace,
                wait_seconds,
            } => emails(&client, &namespace, Duration::from_secs(wait_seconds)).await,
        }
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kmailops-testenv: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A client for the server in KUBECONFIG, with Secrets and ConfigMaps mapped to stand-ins.
async fn shim_client() -> anyhow::Result<Client> {
    let config = Config::infer().await.context("reading KUBECONFIG")?;
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&CoreStandInLayer)
        .build())
}

/// Serves the proxy of `tests/support/api_proxy.rs` until stopped.
async fn serve(client: Client, listen: std::net::SocketAddr, out: &Path) -> anyhow::Result<()> {
    let addr = api_proxy::start(client, listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    api_proxy::write_kubeconfig(addr, out).with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "serving the test API server with Secrets at http://{addr} (kubeconfig {})",
        out.display()
    );
    std::future::pending::<()>().await;
    Ok(())
}

fn yaml_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("reading {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            out.extend(yaml_files(&entries)?);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path.clone());
        }
    }
    Ok(out)
}

async fn apply(client: &Client, paths: &[PathBuf]) -> anyhow::Result<()> {
    let params = PatchParams::apply("kmailops-demo").force();
    for file in yaml_files(paths)? {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(document)
                .with_context(|| format!("{}: invalid YAML", file.display()))?;
            if value.is_null() {
                continue;
            }
            let obj: DynamicObject = serde_json::from_value(serde_json::to_value(&value)?)
                .with_context(|| format!("{}: not a Kubernetes object", file.display()))?;
            let types = obj.types.clone().with_context(|| {
                format!("{}: a document without apiVersion/kind", file.display())
            })?;
            let name = obj.metadata.name.clone().unwrap_or_default();
            let ns = obj
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into());
            let resource = resource_for(&types.api_version, &types.kind, &file)?;
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
            api.patch(&name, &params, &Patch::Apply(&obj))
                .await
                .with_context(|| format!("applying {} {ns}/{name}", types.kind))?;
            println!(
                "{}/{name} applied ({})",
                types.kind.to_lowercase(),
                file.display()
            );
        }
    }
    Ok(())
}

fn resource_for(api_version: &str, kind: &str, file: &Path) -> anyhow::Result<ApiResource> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    if let Some(crd) = kmailops::crds::all()
        .into_iter()
        .find(|c| c.spec.group == group && c.spec.names.kind == kind)
    {
        return Ok(ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: api_version.into(),
            kind: kind.into(),
            plural: crd.spec.names.plural,
        });
    }
    match (api_version, kind) {
        ("v1", "Secret") => Ok(ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&())),
        ("v1", "ConfigMap") => Ok(ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(
            &(),
        )),
        _ => bail!(
            "{}: {api_version}/{kind} is not a kind this tool applies",
            file.display()
        ),
    }
}

fn rests(email: &Email) -> bool {
    let Some(status) = &email.status else {
        return false;
    };
    status.observed_generation == email.metadata.generation
        && matches!(
            status.phase,
            Some(
                EmailPhase::Sent
                    | EmailPhase::Failed
                    | EmailPhase::Unknown
                    | EmailPhase::Expired
                    | EmailPhase::Previewed
                    | EmailPhase::Scheduled
            )
        )
}

async fn emails(client: &Client, ns: &str, wait: Duration) -> anyhow::Result<()> {
    let api: Api<Email> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + wait;
    let list = loop {
        let list = api.list(&ListParams::default()).await?.items;
        if list.iter().all(rests) || Instant::now() >= deadline {
            break list;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!(
        "{:<18} {:<10} {:<20} {:<24} MESSAGE-ID",
        "NAME", "PHASE", "REASON", "SENDER"
    );
    for e in &list {
        let status = e.status.clone().unwrap_or_default();
        let reason = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.reason.clone())
            .unwrap_or_default();
        println!(
            "{:<18} {:<10} {:<20} {:<24} {}",
            e.metadata.name.as_deref().unwrap_or_default(),
            status.phase.map(|p| p.as_str()).unwrap_or("-"),
            reason,
            status.sender_config.unwrap_or_default(),
            status.message_id.unwrap_or_default()
        );
    }
    Ok(())
}
