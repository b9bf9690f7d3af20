//! How fast the machine was during a round, measured by the same fixed piece of work in every
//! round.
//!
//! Why: on this shared machine the same round of work costs every process a different amount
//! of CPU from one half-minute to the next (session 15: the operator's CPU per Email and the API
//! server's moved together by 40 % between end-to-end rounds of one run, while the work per Email
//! did not change). A protocol round and the end-to-end round next to it can fall on either
//! side of such a change, and their ratio then says more about the machine than about the
//! operator. The probe repeats one fixed unit of work on a thread of its own and records the
//! CPU time each took; the median over a round is that round's price of a fixed amount of work.
//! The unit has two parts, measured apart: a few JSON round trips of a watch event (in the
//! core's own caches: what the API server and the operator do most) and a walk of dependent
//! reads through 8 MiB (beyond them: the cache and memory the machine's neighbours share).
//! It also records the share of the machine's time the hypervisor gave to others (steal).
//!
//! A unit takes about 0.3 ms of CPU (the two parts about equal) every 50 ms: under 1 % of one
//! core, the same in every round.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{pairs, procstat};

/// A Sent Email's watch event, as this API server writes it: the JSON part parses it and
/// writes it back, `JSON_REPEATS` times.
const SAMPLE: &str = include_str!("../data/sent-email.json");
const JSON_REPEATS: usize = 4;
/// The memory part: `WALK_STEPS` dependent reads through a random cycle of `WALK_SLOTS` slots
/// (8 MiB of u64).
const WALK_SLOTS: usize = 1 << 20;
const WALK_STEPS: usize = 1024;
const EVERY: Duration = Duration::from_millis(50);

/// What a probe measured over one round.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Speed {
    /// Median CPU time of one unit of work, microseconds (higher: a slower machine): the sum
    /// of the two parts'.
    pub unit_us: f64,
    /// Median CPU time of the JSON part and of the memory part, microseconds.
    pub json_us: f64,
    pub memory_us: f64,
    /// Units measured.
    pub samples: usize,
    /// Share of all cores' time stolen by the hypervisor in the round.
    pub steal: f64,
}

pub struct SpeedProbe {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Unit>>,
    steal_before: Option<(u64, u64)>,
}

impl SpeedProbe {
    pub fn start() -> SpeedProbe {
        let stop = Arc::new(AtomicBool::new(false));
        let steal_before = procstat::steal_ticks();
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("bench-probe".into())
                .spawn(move || {
                    let walk = walk();
                    let mut at = 0;
                    let mut units = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(unit) = one_unit(walk, &mut at) {
                            units.push(unit);
                        }
                        std::thread::sleep(EVERY);
                    }
                    units
                })
                .expect("spawning the speed probe's thread")
        };
        SpeedProbe {
            stop,
            thread,
            steal_before,
        }
    }

    pub fn finish(self) -> Speed {
        self.stop.store(true, Ordering::Relaxed);
        let units = self.thread.join().unwrap_or_default();
        let median = |part: fn(&Unit) -> f64| pairs::median(units.iter().map(part).collect());
        let steal = procstat::share_between(self.steal_before, procstat::steal_ticks());
        Speed {
            unit_us: median(|u| u.json_us + u.memory_us),
            json_us: median(|u| u.json_us),
            memory_us: median(|u| u.memory_us),
            samples: units.len(),
            steal,
        }
    }
}

/// CPU microseconds one unit's two parts took.
struct Unit {
    json_us: f64,
    memory_us: f64,
}

fn one_unit(walk: &[u64], at: &mut usize) -> Option<Unit> {
    let started = procstat::thread_cpu_ns()?;
    let mut bytes = 0;
    for _ in 0..JSON_REPEATS {
        let value: serde_json::Value = serde_json::from_str(SAMPLE).ok()?;
        bytes += serde_json::to_vec(std::hint::black_box(&value)).ok()?.len();
    }
    std::hint::black_box(bytes);
    let json_done = procstat::thread_cpu_ns()?;
    for _ in 0..WALK_STEPS {
        *at = walk[*at] as usize;
    }
    std::hint::black_box(*at);
    let walked = procstat::thread_cpu_ns()?;
    Some(Unit {
        json_us: json_done.saturating_sub(started) as f64 / 1000.0,
        memory_us: walked.saturating_sub(json_done) as f64 / 1000.0,
    })
}

/// The memory part's cycle, built once per process (8 MiB and a shuffle: not work to repeat
/// at the start of every round's window).
fn walk() -> &'static [u64] {
    static WALK: std::sync::OnceLock<Vec<u64>> = std::sync::OnceLock::new();
    WALK.get_or_init(|| random_cycle(WALK_SLOTS))
}

/// A single cycle through all `n` slots, in a shuffled order: each read depends on the one
/// before, and the hardware cannot guess the next address.
fn random_cycle(n: usize) -> Vec<u64> {
    let mut order: Vec<u64> = (0..n as u64).collect();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for i in (1..n).rev() {
        // xorshift64: any fixed sequence does; the order only has to defeat prefetching.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let j = (state % i as u64) as usize;
        order.swap(i, j);
    }
    let mut next = vec![0; n];
    for w in 0..n {
        next[order[w] as usize] = order[(w + 1) % n];
    }
    next
}
