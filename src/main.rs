//! The `kmailops` binary: parse the command line and hand over to [`kmailops::cli`].

use std::process::ExitCode;

use clap::Parser;
use kmailops::template::{isolation, worker};

// See Cargo.toml; the render workers (this same program) use it too.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read by jemalloc itself under this symbol's name when it starts: a
/// background thread gives freed pages back after a second, straight to the kernel (not
/// through the lazy MADV_FREE stage, whose pages still count in RSS), so the operator's RSS
/// falls back after a burst. In the code, not in the build's environment, so every build of
/// the binary (cargo install, the image) gets them.
// SAFETY: jemalloc reads this as a `const char *`: a reference to an array is a plain pointer,
// here to a NUL-terminated string that nothing writes.
#[unsafe(export_name = "_rjem_malloc_conf")]
#[allow(non_upper_case_globals)]
pub static malloc_conf: &[u8; 60] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

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
    let cli = kmailops::cli::Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    // The controller's own setting (one thread by default: see `--worker-threads`); the
    // one-off commands keep one thread per core.
    if let kmailops::cli::Command::Run(args) = &cli.command {
        runtime.worker_threads(usize::from(args.worker_threads));
    }
    let runtime = match runtime.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(cli.run())
}
