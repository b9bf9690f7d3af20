//! When to try again after a transient error: exponential backoff with jitter, capped, and
//! never sooner than the provider asked (Retry-After), up to the same cap.

use std::time::Duration;

use crate::api::sender_config::RetrySpec;

/// Parses a duration like `5s`, `10m` or `1h30m`; the CRD's pattern has already checked the form.
pub fn parse_duration(s: &str) -> Option<Duration> {
    humantime::parse_duration(s).ok()
}

/// The wait after `attempts` finished attempts (1 after the first failure).
pub fn delay(retry: &RetrySpec, attempts: i32, retry_after: Option<Duration>) -> Duration {
    let initial = parse_duration(&retry.initial_backoff).unwrap_or(Duration::from_secs(5));
    let max = parse_duration(&retry.max_backoff)
        .unwrap_or(Duration::from_secs(600))
        .max(initial);
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let base = initial
        .saturating_mul(2u32.saturating_pow(exponent))
        .min(max);
    // Equal jitter: half fixed, half random, so many Emails failing together spread out
    // without any of them retrying almost at once.
    let half = base / 2;
    let jitter = half.mul_f64(rand::random::<f64>());
    let backoff = half + jitter;
    match retry_after {
        // Honoured up to the sender's own maxBackoff: a provider (or anything posing as one at
        // the sender's baseUrl) cannot park an Email for days with `Retry-After: 999999999`.
        Some(asked) => backoff.min(max).max(asked.min(max)),
        None => backoff,
    }
}

/// When the next attempt is due, rounded up to a whole second: Kubernetes times carry
/// seconds only, so a time with a fraction would read back as earlier than planned.
pub fn next_attempt_at(now: jiff::Timestamp, wait: Duration) -> jiff::Timestamp {
    let at = now
        .checked_add(jiff::SignedDuration::try_from(wait).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(jiff::Timestamp::MAX);
    let whole = jiff::Timestamp::from_second(at.as_second()).unwrap_or(at);
    if whole < at {
        jiff::Timestamp::from_second(at.as_second().saturating_add(1)).unwrap_or(at)
    } else {
        whole
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(initial: &str, max: &str) -> RetrySpec {
        RetrySpec {
            max_attempts: Some(5),
            max_duration: "30m".into(),
            initial_backoff: initial.into(),
            max_backoff: max.into(),
        }
    }

    #[test]
    fn backoff_doubles_per_attempt_within_jitter_and_stops_at_the_cap() {
        let s = spec("4s", "20s");
        for _ in 0..50 {
            let first = delay(&s, 1, None);
            assert!(first >= Duration::from_secs(2) && first <= Duration::from_secs(4));
            let third = delay(&s, 3, None);
            assert!(third >= Duration::from_secs(8) && third <= Duration::from_secs(16));
            let tenth = delay(&s, 10, None);
            assert!(tenth >= Duration::from_secs(10) && tenth <= Duration::from_secs(20));
        }
    }

    #[test]
    fn retry_after_from_the_provider_is_a_floor() {
        let s = spec("1s", "10m");
        assert!(delay(&s, 1, Some(Duration::from_secs(30))) >= Duration::from_secs(30));
    }

    #[test]
    fn retry_after_beyond_max_backoff_is_capped_there() {
        let s = spec("1s", "10m");
        let asked = Duration::from_secs(999_999_999);
        assert_eq!(delay(&s, 1, Some(asked)), Duration::from_secs(600));
    }

    #[test]
    fn the_next_attempt_is_never_earlier_than_the_wait_once_stored_in_whole_seconds() {
        let now: jiff::Timestamp = "2026-11-21T10:00:00.300Z".parse().unwrap();
        let at = next_attempt_at(now, Duration::from_millis(2000));
        assert_eq!(at.to_string(), "2026-11-21T10:00:03Z");
        let exact: jiff::Timestamp = "2026-11-21T10:00:00Z".parse().unwrap();
        assert_eq!(
            next_attempt_at(exact, Duration::from_secs(2)).to_string(),
            "2026-11-21T10:00:02Z"
        );
    }

    #[test]
    fn go_style_durations_parse() {
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    }
}
