//! The `kmailops` binary: parse the command line and hand over to [`kmailops::cli`].

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    kmailops::cli::Cli::parse().run().await
}
