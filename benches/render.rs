//! Micro-benchmark of the CPU step every send goes through: turning an Email into the
//! message a provider gets. Run by `scripts/bench.sh` (or `cargo bench --bench render`);
//! prints one line and writes `$BENCH_OUT/render.json` (default `target/bench`).
//!
//! Measured: `email::content::literal` + `message::build_message` (validation of every
//! mailbox, headers and tags, and the SHA-256 delivery hash) for `examples/emails/plain.yaml`
//! through `examples/senders/mailersend.yaml`. Template rendering (`kmailops::template`) is
//! not on this branch yet; when it is, its example (`examples/templates/order-shipped.yaml`)
//! belongs here as well.

use std::hint::black_box;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use kmailops::email::content;
use kmailops::manifests::ManifestSet;
use kmailops::message::build_message;

/// Long enough for a stable figure, short enough to be a side note of the whole bench.
const MEASURE: Duration = Duration::from_secs(3);
const WARM_UP: Duration = Duration::from_millis(300);

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("render bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let set = ManifestSet::load(
        &[
            root.join("examples/emails/plain.yaml"),
            root.join("examples/senders/mailersend.yaml"),
        ],
        "default",
    )?;
    let email = &set
        .emails
        .first()
        .context("no Email in examples/emails/plain.yaml")?
        .object;
    let sender = set
        .sender_configs
        .first()
        .context("no EmailSenderConfig in examples/senders/mailersend.yaml")?;
    let sender_key = sender.key();

    let once = || -> anyhow::Result<()> {
        let rendered = content::literal(&email.spec)
            .map_err(|p| anyhow::anyhow!("the example's content: {}", p.message))?;
        let message = build_message(
            black_box(&email.spec),
            &sender.object.spec,
            &sender_key,
            rendered,
            Vec::new(),
        )?;
        black_box(message);
        Ok(())
    };

    let warm_up = Instant::now();
    while warm_up.elapsed() < WARM_UP {
        once()?;
    }
    let started = Instant::now();
    let mut iterations = 0u64;
    while started.elapsed() < MEASURE {
        // Check the clock every 256 builds, not after each.
        for _ in 0..256 {
            once()?;
        }
        iterations += 256;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let per_s = iterations as f64 / elapsed;
    let what = "message building (content::literal + message::build_message) of examples/emails/plain.yaml; kmailops::template is not on this branch";
    println!(
        "render: {per_s:.0} messages/s ({:.2} us each), single thread: {what}",
        1e6 / per_s
    );
    let out = std::env::var_os("BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/bench"));
    std::fs::create_dir_all(&out)?;
    let json = serde_json::json!({
        "what": what,
        "renders_per_s": per_s.round(),
        "us_per_render": (1e8 / per_s).round() / 100.0,
        "iterations": iterations,
    });
    std::fs::write(
        out.join("render.json"),
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    Ok(())
}
