//! `kmailops crds`: the CRDs generated from the Rust types.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};

#[derive(Args, Debug)]
pub struct CrdsArgs {
    /// Write one YAML file per kind into this folder instead of printing them all.
    #[arg(long, short = 'o', value_name = "DIR", conflicts_with = "apply")]
    pub output_dir: Option<PathBuf>,
    /// Install or update the CRDs in the cluster of KUBECONFIG (server-side apply) and wait
    /// until they are established.
    #[arg(long)]
    pub apply: bool,
}

pub async fn run(args: &CrdsArgs) -> anyhow::Result<ExitCode> {
    let crds = crate::crds::all();
    if args.apply {
        apply(&crds).await?;
        return Ok(ExitCode::SUCCESS);
    }
    match &args.output_dir {
        None => print!("{}", crate::crds::to_yaml(&crds)?),
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for crd in &crds {
                let path = dir.join(crate::crds::file_name(crd));
                let yaml = crate::crds::to_yaml(std::slice::from_ref(crd))?;
                std::fs::write(&path, yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn apply(crds: &[CustomResourceDefinition]) -> anyhow::Result<()> {
    crate::provider::http::install_crypto_provider();
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes (KUBECONFIG or the in-cluster service account)")?;
    let api: Api<CustomResourceDefinition> = Api::all(client);
    let params = PatchParams::apply("kmailops-crds").force();
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(crd))
            .await
            .with_context(|| format!("applying CRD {name}"))?;
        tokio::time::timeout(
            Duration::from_secs(60),
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .with_context(|| format!("CRD {name} was not established within 60s"))??;
        eprintln!("applied {name}");
    }
    Ok(())
}
