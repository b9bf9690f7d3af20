//! The `kmailops` command line: one binary, one subcommand per job.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod crds;
pub mod run;

/// kmailops: send email from Kubernetes manifests, exactly once.
#[derive(Parser, Debug)]
#[command(name = "kmailops", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller against the cluster in KUBECONFIG (or in-cluster).
    Run(run::RunArgs),
    /// Print the CustomResourceDefinitions, or write one file per kind.
    Crds(crds::CrdsArgs),
}

impl Cli {
    /// Runs the chosen subcommand and turns its result into the process exit code.
    pub async fn run(self) -> ExitCode {
        let result = match self.command {
            Command::Run(args) => run::run(args).await,
            Command::Crds(args) => crds::run(&args),
        };
        match result {
            Ok(code) => code,
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::FAILURE
            }
        }
    }
}
