//! The test API server's garbage-collection cycles, from its own trace.
//!
//! Why: under a steady stream, the slowest Emails come in bursts of a second or less, and the
//! operator's log shows no pause in them. The API server is a Go program whose heap reaches
//! gigabytes at N=10000; while its collector marks, requests are made to help it. `bench.sh`
//! starts the test server with `GODEBUG=gctrace=1`, which writes one line per cycle to its log;
//! this module puts those cycles on the wall clock so the open loop can report the ones that
//! overlapped its minute next to its slowest Emails.
//!
//! A cycle's line: `gc 154 @327.953s 12%: 0.37+3978+0.10 ms clock, 0.75+872/2003/0+0.21 ms cpu,
//! ...`: started 327.953 s after the process, 3978 ms of concurrent mark, 872 ms of it CPU
//! that requests spent assisting.

use std::path::Path;
use std::time::{Duration, SystemTime};

/// One collector cycle.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cycle {
    /// Seconds after the process started.
    pub after_start_s: f64,
    /// Wall time from the first stop to the end of the last (sweep termination, concurrent
    /// mark, mark termination), ms.
    pub wall_ms: f64,
    /// CPU that allocating goroutines (requests) spent helping the mark, ms.
    pub assist_ms: f64,
}

/// Parses one line of a Go `gctrace=1` trace; `None` for any other line.
pub fn parse_line(line: &str) -> Option<Cycle> {
    let rest = line.strip_prefix("gc ")?;
    let mut words = rest.split_whitespace();
    words.next()?.parse::<u64>().ok()?;
    let after_start_s = words
        .next()?
        .strip_prefix('@')?
        .strip_suffix('s')?
        .parse()
        .ok()?;
    words.next()?; // "12%:"
    let clock = words.next()?;
    (words.next()? == "ms").then_some(())?;
    (words.next()? == "clock,").then_some(())?;
    let cpu = words.next()?;
    let wall_ms = clock
        .split('+')
        .map(|p| p.parse::<f64>().ok())
        .sum::<Option<f64>>()?;
    // cpu: "stw+assist/background/idle+stw"
    let assist_ms = cpu.split('+').nth(1)?.split('/').next()?.parse().ok()?;
    Some(Cycle {
        after_start_s,
        wall_ms,
        assist_ms,
    })
}

/// The cycles in `log` of the process `pid` that ran at any time within `[from, to]`, each with
/// the time it started (the trace counts from the process's start).
pub fn cycles_between(
    log: &Path,
    pid: u32,
    from: SystemTime,
    to: SystemTime,
) -> Vec<(SystemTime, Cycle)> {
    let (Some(started), Ok(text)) = (
        crate::procstat::started_at(pid),
        std::fs::read_to_string(log),
    ) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(parse_line)
        .map(|c| (started + Duration::from_secs_f64(c.after_start_s), c))
        .filter(|(at, c)| {
            let end = *at + Duration::from_secs_f64(c.wall_ms / 1000.0);
            end >= from && *at <= to
        })
        .collect()
}
