//! Micro-benchmark of the CPU steps every send goes through, single thread. Run by
//! `scripts/bench.sh` (or `cargo bench --bench render`); prints a line per step and writes
//! `$BENCH_OUT/render.json` (default `target/bench`).
//!
//! - render: `examples/emails/templated.yaml` through `examples/templates/order-shipped.yaml`,
//!   whose text and HTML bodies extend the built-in layouts in `templates/`: what the
//!   controller does for a templated Email (`email::content::render_content`: a fresh
//!   minijinja environment, subject, text and HTML).
//! - build: that content turned into the message a provider gets (`message::build_message`:
//!   every mailbox, header and tag checked, and the SHA-256 delivery hash), through
//!   `examples/senders/mailersend.yaml`.
//! - send slot: a slot taken and given back by one namespace while another has
//!   [`PARKED_BACKLOG`] deliveries parked (`send_slots::SendSlots`): each slot given back
//!   looks for the oldest parked delivery that may go now, so this is what one tenant's
//!   backlog costs every other tenant's send. Twice: the backlog waiting for one sender, and
//!   spread over [`SPREAD_SENDERS`] senders of its namespace.
//! - watch event: the `MODIFIED` event of a Sent Email (`benches/data/sent-email.json`, as the
//!   API server answered, managed fields and all) through what the operator's Email watch does
//!   before the cache: the depth guard's scan (`tolerant::depth::guard_document`) and the
//!   per-object parse (`tolerant::Guarded`). Every Email passes here at least twice (created,
//!   then the echo of its status write), and at each restart once more.

use std::hint::black_box;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use kmailops::lookup::content::{Selectors, include_admission, render_content, resolve_template};
use kmailops::manifests::ManifestSet;
use kmailops::message::build_message;
use kmailops::send_slots::{Reservation, SendSlots, SlotLimits};
use kmailops::template::{Builtins, TemplateSet};
use kmailops::tolerant::{self, Guarded};

/// Long enough for a stable figure, short enough to be a side note of the whole bench.
const MEASURE: Duration = Duration::from_secs(3);
const WARM_UP: Duration = Duration::from_millis(300);
/// Deliveries parked by the other namespace in the send-slot step.
const PARKED_BACKLOG: usize = 10_000;
/// Senders the backlog is spread over in the second send-slot step.
const SPREAD_SENDERS: usize = 1_000;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("render bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Calls of `once` per second over [`MEASURE`], after a warm-up.
fn per_second(mut once: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<(f64, u64)> {
    let warm_up = Instant::now();
    while warm_up.elapsed() < WARM_UP {
        once()?;
    }
    let started = Instant::now();
    let mut iterations = 0u64;
    while started.elapsed() < MEASURE {
        // Check the clock every 64 calls, not after each.
        for _ in 0..64 {
            once()?;
        }
        iterations += 64;
    }
    Ok((
        iterations as f64 / started.elapsed().as_secs_f64(),
        iterations,
    ))
}

fn run() -> anyhow::Result<()> {
    // The render itself, in this thread: what a worker does per request (the `kmailops` binary
    // adds a pipe round trip to a worker; tests/render_isolation.rs prints that cost).
    kmailops::template::isolation::choose(kmailops::template::isolation::Isolation::InProcess);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let set = ManifestSet::load(
        &[
            root.join("examples/emails/templated.yaml"),
            root.join("examples/templates/order-shipped.yaml"),
            root.join("examples/senders/mailersend.yaml"),
        ],
        "default",
    )?;
    let email = set
        .emails
        .first()
        .context("no Email in examples/emails/templated.yaml")?;
    let sender = set
        .sender_configs
        .first()
        .context("no EmailSenderConfig in examples/senders/mailersend.yaml")?;
    let mut templates = TemplateSet::default();
    for t in &set.templates {
        templates.insert(&t.namespace, &t.name, t.object.clone());
    }
    let templates = Arc::new(templates);
    let builtins = Arc::new(Builtins::load(&root.join("templates"))?);
    let spec = &email.object.spec;
    let template = resolve_template(spec, &email.namespace, &*templates, &|_| true)
        .map_err(|p| anyhow::anyhow!("the example's template: {}", p.message))?;

    let render = || {
        render_content(
            black_box(spec),
            template.as_ref(),
            templates.clone(),
            builtins.clone(),
            include_admission(&email.namespace, None, Selectors::AsLabelled),
        )
        .map_err(|p| anyhow::anyhow!("rendering the example: {}", p.message))
    };
    let content = render()?;
    anyhow::ensure!(
        content.html.as_deref().is_some_and(|h| h.contains("10045"))
            && content.text.as_deref().is_some_and(|t| t.contains("Ada")),
        "the example rendered without its variables: {content:?}"
    );
    let (renders_per_s, render_iterations) = per_second(|| {
        black_box(render()?);
        Ok(())
    })?;

    let sender_key = sender.key();
    let (builds_per_s, build_iterations) = per_second(|| {
        let message = build_message(
            black_box(spec),
            &sender.object.spec,
            &sender_key,
            content.clone(),
            Vec::new(),
        )?;
        black_box(message);
        Ok(())
    })?;

    let (slot_cycles_per_s, slot_iterations) = slot_cycle_with_backlog(1)?;
    let (spread_cycles_per_s, spread_iterations) = slot_cycle_with_backlog(SPREAD_SENDERS)?;
    let (events_per_s, event_iterations) = watch_event(&root)?;
    let what_render = "render: examples/emails/templated.yaml with the order-shipped EmailTemplate (subject, text and HTML, both bodies extending the built-in layouts)";
    let what_build = "build: message::build_message of that content (checks and the delivery hash)";
    println!(
        "{what_render}: {renders_per_s:.0}/s ({:.1} us each)",
        1e6 / renders_per_s
    );
    println!(
        "{what_build}: {builds_per_s:.0}/s ({:.1} us each)",
        1e6 / builds_per_s
    );
    let what_slot = format!(
        "send slot: taken and given back beside another namespace's {PARKED_BACKLOG} parked deliveries"
    );
    println!(
        "{what_slot}: {slot_cycles_per_s:.0}/s ({:.2} us each)",
        1e6 / slot_cycles_per_s
    );
    let what_spread = format!("{what_slot}, spread over {SPREAD_SENDERS} senders");
    println!(
        "{what_spread}: {spread_cycles_per_s:.0}/s ({:.2} us each)",
        1e6 / spread_cycles_per_s
    );
    let what_event = "watch event: a Sent Email's MODIFIED event (3.7 KB with its managed fields) through the depth guard and the per-object parse";
    println!(
        "{what_event}: {events_per_s:.0}/s ({:.1} us each)",
        1e6 / events_per_s
    );
    let out = std::env::var_os("BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/bench"));
    std::fs::create_dir_all(&out)?;
    let round = |x: f64| (x * 10.0).round() / 10.0;
    let json = serde_json::json!({
        "what": what_render,
        "renders_per_s": renders_per_s.round(),
        "us_per_render": round(1e6 / renders_per_s),
        "iterations": render_iterations,
        "message_build": {
            "what": what_build,
            "builds_per_s": builds_per_s.round(),
            "us_per_build": round(1e6 / builds_per_s),
            "iterations": build_iterations,
        },
        "send_slot": {
            "what": what_slot,
            "parked": PARKED_BACKLOG,
            "cycles_per_s": slot_cycles_per_s.round(),
            "us_per_cycle": (1e8 / slot_cycles_per_s).round() / 100.0,
            "iterations": slot_iterations,
        },
        "send_slot_spread": {
            "what": what_spread,
            "parked": PARKED_BACKLOG,
            "senders": SPREAD_SENDERS,
            "cycles_per_s": spread_cycles_per_s.round(),
            "us_per_cycle": (1e8 / spread_cycles_per_s).round() / 100.0,
            "iterations": spread_iterations,
        },
        "watch_event": {
            "what": what_event,
            "events_per_s": events_per_s.round(),
            "us_per_event": round(1e6 / events_per_s),
            "iterations": event_iterations,
        },
    });
    std::fs::write(
        out.join("render.json"),
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    Ok(())
}

/// The send-slot step: namespace `backlog` takes what its caps give it (slots, then places
/// in line) through `senders` senders in turn, and then parks [`PARKED_BACKLOG`] deliveries;
/// then namespace `other` takes a slot and gives it back, again and again.
fn slot_cycle_with_backlog(senders: usize) -> anyhow::Result<(f64, u64)> {
    let slots = SendSlots::new(SlotLimits::from_total(16));
    slots.set_waker(Arc::new(|_: &str| {}));
    let ns = "backlog";
    let mut taken = Vec::new();
    let mut parked = 0;
    for key in 0.. {
        if parked == PARKED_BACKLOG {
            break;
        }
        let sender = format!("{ns}/s{}", key % senders);
        match slots.reserve_or_park(ns, &sender, &format!("{ns}/e{key}")) {
            Some(reservation) if parked == 0 => taken.push(reservation),
            Some(_) => anyhow::bail!("a place freed while the backlog was parked"),
            None => parked += 1,
        }
    }
    anyhow::ensure!(
        slots.parked() == PARKED_BACKLOG,
        "the backlog was not parked"
    );
    let result = per_second(|| {
        match slots.reserve("other", "other/mailersend") {
            Some(Reservation::Granted(permit)) => drop(black_box(permit)),
            _ => anyhow::bail!("the other namespace found no free slot"),
        }
        Ok(())
    })?;
    anyhow::ensure!(
        slots.parked() == PARKED_BACKLOG,
        "a parked delivery was woken"
    );
    drop(taken);
    Ok(result)
}

/// The watch-event step: one line of an Email watch, as the API server writes it ("type"
/// first), guarded and parsed as kube's watcher parses it.
fn watch_event(root: &std::path::Path) -> anyhow::Result<(f64, u64)> {
    let object = std::fs::read_to_string(root.join("benches/data/sent-email.json"))?;
    let line = bytes::Bytes::from(format!(
        r#"{{"type":"MODIFIED","object":{}}}"#,
        object.trim()
    ));
    let parse = || -> anyhow::Result<()> {
        let guarded = tolerant::depth::guard_document(black_box(line.clone()));
        let event: kube::core::WatchEvent<Guarded<kmailops::api::Email>> =
            serde_json::from_slice(&guarded)?;
        match event {
            kube::core::WatchEvent::Modified(Guarded(Ok(email))) => {
                black_box(email);
                Ok(())
            }
            _ => anyhow::bail!("the Sent Email did not parse as a readable Email"),
        }
    };
    parse()?;
    per_second(parse)
}
