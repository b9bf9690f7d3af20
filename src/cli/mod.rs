//! The `kmailops` command line: one binary, one subcommand per job.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod check;
pub mod crds;
mod offline;
pub mod render;
pub mod run;
pub mod send;
pub mod validate;

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
    /// Send one Email from manifest files (Email, EmailSenderConfig, Secrets), no cluster.
    Send(send::SendArgs),
    /// Health-check one EmailSenderConfig from manifest files, no cluster.
    Check(check::CheckArgs),
    /// Render one Email (its template, includes and built-ins) from manifest files, no
    /// cluster: the text or HTML body, or the whole message (eml).
    Render(render::RenderArgs),
    /// Check every kmailops manifest under a folder: schema, template syntax and rendering,
    /// references, required variables. Prints one line per problem; no cluster.
    Validate(validate::ValidateArgs),
}

impl Cli {
    /// Runs the chosen subcommand and turns its result into the process exit code.
    pub async fn run(self) -> ExitCode {
        let result = match self.command {
            Command::Run(args) => run::run(args).await,
            Command::Crds(args) => crds::run(&args).await,
            Command::Send(args) => send::run(&args).await,
            Command::Check(args) => check::run(&args).await,
            Command::Render(args) => render::run(&args).await,
            Command::Validate(args) => validate::run(&args),
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
