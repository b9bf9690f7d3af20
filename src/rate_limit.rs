//! One token bucket per sender, shared by every Email sent through it in this process.
//!
//! A bucket holds at most `burst` tokens and gains `perMinute / 60` per second, so in any
//! window of T seconds at most `burst + perMinute * T / 60` sends start: never more than
//! perMinute plus burst in a minute.
//!
//! The bucket admits an Email to a send ([`RateLimiters::try_acquire`]); a refused one waits
//! as `Pending`. Between that and the provider call come the claim's write and the wait for
//! a send slot, which take longer for some Emails than for others: calls admitted a second
//! apart can reach the provider together. So each call is also paced
//! ([`RateLimiters::pace`]) on the same limit, by when it is actually made, and the
//! provider never sees more than the limit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::api::sender_config::RateLimitSpec;

#[derive(Default)]
pub struct RateLimiters {
    buckets: Mutex<HashMap<String, Bucket>>,
    pacers: Mutex<HashMap<String, Pacer>>,
}

/// The longest a provider call is held back by [`RateLimiters::pace`]. Admission keeps the
/// calls to the rate, so a longer wait only comes from retries and fail-overs (which are not
/// admitted again) piling up; the call then goes out rather than hold its slot and claim.
pub const MAX_PACE: Duration = Duration::from_secs(5);

/// The schedule of a sender's provider calls (a virtual-scheduling token bucket): `next` is
/// when the call after the burst would be due; a call is due `burst - 1` intervals before it.
struct Pacer {
    limit: (i32, i32),
    next: Instant,
}

struct Bucket {
    limit: (i32, i32),
    tokens: f64,
    updated: Instant,
}

impl RateLimiters {
    /// Takes a token for a send through `sender`, or says how long until one is free.
    pub fn try_acquire(&self, sender: &str, spec: Option<&RateLimitSpec>) -> Result<(), Duration> {
        let Some(spec) = spec else { return Ok(()) };
        let per_minute = spec.per_minute.max(1);
        let burst = spec.burst.unwrap_or(1).max(1);
        let rate = f64::from(per_minute) / 60.0;
        let capacity = f64::from(burst);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(sender.to_string()).or_insert(Bucket {
            limit: (per_minute, burst),
            tokens: capacity,
            updated: now,
        });
        if bucket.limit != (per_minute, burst) {
            // A changed limit starts from the new burst, never above it.
            bucket.limit = (per_minute, burst);
            bucket.tokens = bucket.tokens.min(capacity);
        }
        let gained = now.duration_since(bucket.updated).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + gained).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }

    /// Drops the bucket and the schedule of a deleted sender, so senders made and deleted
    /// over and over (one tenant's loop) do not pile up here. A sender created again under
    /// the same name starts with a full burst, as a new one would.
    pub fn forget(&self, sender: &str) {
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(sender);
        self.pacers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(sender);
    }

    /// How long the provider call about to be made through `sender` waits so that, by when
    /// calls are made, at most `burst + perMinute * T / 60` fall in any window of T seconds
    /// (never longer than [`MAX_PACE`]).
    pub fn pace(&self, sender: &str, spec: Option<&RateLimitSpec>) -> Duration {
        self.pace_at(sender, spec, Instant::now())
    }

    fn pace_at(&self, sender: &str, spec: Option<&RateLimitSpec>, now: Instant) -> Duration {
        let Some(spec) = spec else {
            return Duration::ZERO;
        };
        let per_minute = spec.per_minute.max(1);
        let burst = spec.burst.unwrap_or(1).max(1);
        let interval = Duration::from_secs_f64(60.0 / f64::from(per_minute));
        let tolerance = interval.saturating_mul(u32::try_from(burst - 1).unwrap_or(u32::MAX));
        let mut pacers = self.pacers.lock().unwrap_or_else(|p| p.into_inner());
        let pacer = pacers.entry(sender.to_string()).or_insert(Pacer {
            limit: (per_minute, burst),
            next: now,
        });
        if pacer.limit != (per_minute, burst) {
            *pacer = Pacer {
                limit: (per_minute, burst),
                next: now,
            };
        }
        let next = pacer.next.max(now);
        let due = next.checked_sub(tolerance).unwrap_or(now).max(now);
        let wait = (due - now).min(MAX_PACE);
        // The schedule moves on by one interval, also when the wait was cut to MAX_PACE:
        // calls after a pile-up keep waiting their turn instead of going out together.
        pacer.next = next.max(now + wait) + interval;
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_through_at_once_and_then_sends_wait_for_the_rate() {
        let limits = RateLimiters::default();
        let spec = RateLimitSpec {
            per_minute: 60,
            burst: Some(3),
        };
        for _ in 0..3 {
            assert!(limits.try_acquire("ns/s", Some(&spec)).is_ok());
        }
        let wait = limits.try_acquire("ns/s", Some(&spec)).unwrap_err();
        assert!(
            wait <= Duration::from_secs(1) && wait > Duration::from_millis(900),
            "{wait:?}"
        );
        // Another sender has its own bucket; no limit means no waiting.
        assert!(limits.try_acquire("ns/other", Some(&spec)).is_ok());
        assert!(limits.try_acquire("ns/s", None).is_ok());
    }

    fn spec(per_minute: i32, burst: i32) -> RateLimitSpec {
        RateLimitSpec {
            per_minute,
            burst: Some(burst),
        }
    }

    #[test]
    fn calls_beyond_the_burst_are_spaced_by_the_rate_and_the_burst_comes_back_after_a_pause() {
        let limits = RateLimiters::default();
        let spec = spec(60, 3);
        let t0 = Instant::now();
        let waits: Vec<Duration> = (0..5)
            .map(|_| limits.pace_at("ns/s", Some(&spec), t0))
            .collect();
        let secs = |s: u64| Duration::from_secs(s);
        assert_eq!(waits, [secs(0), secs(0), secs(0), secs(1), secs(2)]);
        // Another sender, or no limit, is not held back by this one.
        assert_eq!(limits.pace_at("ns/other", Some(&spec), t0), Duration::ZERO);
        assert_eq!(limits.pace_at("ns/s", None, t0), Duration::ZERO);
        // After a pause long enough to refill the burst, three go at once again.
        let later = t0 + secs(10);
        for _ in 0..3 {
            assert_eq!(limits.pace_at("ns/s", Some(&spec), later), Duration::ZERO);
        }
        assert_eq!(limits.pace_at("ns/s", Some(&spec), later), secs(1));
    }

    #[test]
    fn a_pile_of_calls_waits_at_most_max_pace_each() {
        let limits = RateLimiters::default();
        let spec = spec(6, 1);
        let t0 = Instant::now();
        let waits: Vec<Duration> = (0..4)
            .map(|_| limits.pace_at("ns/s", Some(&spec), t0))
            .collect();
        assert_eq!(waits, [Duration::ZERO, MAX_PACE, MAX_PACE, MAX_PACE]);
    }

    #[test]
    fn a_deleted_sender_leaves_nothing_behind() {
        let limits = RateLimiters::default();
        let spec = spec(60, 1);
        let t0 = Instant::now();
        assert!(limits.try_acquire("ns/s", Some(&spec)).is_ok());
        assert_eq!(limits.pace_at("ns/s", Some(&spec), t0), Duration::ZERO);
        limits.forget("ns/s");
        assert!(limits.buckets.lock().unwrap().is_empty());
        assert!(limits.pacers.lock().unwrap().is_empty());
        // Created again: a new sender's full burst.
        assert!(limits.try_acquire("ns/s", Some(&spec)).is_ok());
        assert_eq!(limits.pace_at("ns/s", Some(&spec), t0), Duration::ZERO);
    }

    proptest::proptest! {
        /// Whatever the moments calls are about to be made, once each has waited its pace,
        /// no window holds more than the limit: the provider sees what the sender allows.
        #[test]
        fn paced_calls_never_exceed_the_limit_in_any_window(
            per_minute in 30i32..600,
            burst in 1i32..8,
            gaps_ms in proptest::collection::vec(0u64..400, 1..120),
        ) {
            let limits = RateLimiters::default();
            let spec = spec(per_minute, burst);
            let t0 = Instant::now();
            let mut now = t0;
            let mut made = Vec::new();
            for gap in gaps_ms {
                now += Duration::from_millis(gap);
                let wait = limits.pace_at("ns/s", Some(&spec), now);
                proptest::prop_assume!(wait < MAX_PACE);
                made.push(now + wait);
            }
            made.sort();
            let rate = f64::from(per_minute) / 60.0;
            for i in 0..made.len() {
                for j in i..made.len() {
                    let window = (made[j] - made[i]).as_secs_f64();
                    let count = (j - i + 1) as f64;
                    proptest::prop_assert!(
                        count <= f64::from(burst) + window * rate + 1e-6,
                        "{count} calls within {window:.3}s, limit {per_minute}/min burst {burst}"
                    );
                }
            }
        }
    }
}
