//! The `kmailops` binary: parse the command line and hand over to [`kmailops::cli`].

use std::process::ExitCode;

use clap::Parser;
use kmailops::template::{isolation, worker};

fn main() -> ExitCode {
    // A render worker (started by this program itself) needs no runtime and no arguments.
    if std::env::args_os().nth(1).as_deref() == Some(worker::COMMAND.as_ref()) {
        return worker::serve();
    }
    // The operator and every command render in memory-capped workers, never in-process.
    match isolation::this_program() {
        Ok(program) => isolation::choose(isolation::Isolation::Workers { program }),
        Err(e) => {
            eprintln!("error: cannot find this program's file to start render workers: {e}");
            return ExitCode::FAILURE;
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(kmailops::cli::Cli::parse().run())
}
