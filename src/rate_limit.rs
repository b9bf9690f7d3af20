//! One token bucket per sender, shared by every Email sent through it in this process.
//!
//! A bucket holds at most `burst` tokens and gains `perMinute / 60` per second, so in any
//! window of T seconds at most `burst + perMinute * T / 60` sends start: never more than
//! perMinute plus burst in a minute.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::api::sender_config::RateLimitSpec;

#[derive(Default)]
pub struct RateLimiters {
    buckets: Mutex<HashMap<String, Bucket>>,
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
}
