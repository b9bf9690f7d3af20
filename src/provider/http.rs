//! The one HTTP client every HTTP provider shares, and the pieces of response handling
//! they have in common (error classification, Retry-After, error bodies).

use std::sync::Once;
use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::error::{SendError, chain, find_tls_error};
use super::health::{HealthReport, reason};

/// Time limits of the shared client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpTimeouts {
    /// TCP connect plus TLS handshake.
    pub connect: Duration,
    /// The whole request, from connect to the last byte of the response.
    pub request: Duration,
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        HttpTimeouts {
            connect: Duration::from_secs(10),
            request: Duration::from_secs(30),
        }
    }
}

/// Installs rustls' ring provider as the process default, once. reqwest is built without a
/// provider of its own, so this must run before any client is built; calling it again (or
/// after something else installed one) is harmless.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another provider is already installed, which serves just as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The shared client: connection pooling, connect and request timeouts, TLS verification
/// against the system's roots.
pub fn http_client() -> reqwest::Client {
    http_client_with(HttpTimeouts::default())
}

/// [`http_client`] with other time limits (tests use short ones).
///
/// Panics only when the TLS stack can not be set up at all, which no input can cause and no
/// request could survive; like `reqwest::Client::new`, it is a startup failure.
pub fn http_client_with(timeouts: HttpTimeouts) -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::builder()
        .user_agent(concat!("kmailops/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.request)
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .unwrap_or_else(|e| panic!("cannot set up the HTTP client's TLS: {}", chain(&e)))
}

/// A provider's answer, read completely.
pub(crate) struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

/// Sends a request whose body changes the world (a send). A failure before any response is
/// Transient only when the connection never came up; once the request may have gone out,
/// nobody can say whether the provider acted on it.
pub(crate) async fn send(req: reqwest::RequestBuilder, provider: &str) -> Result<Reply, SendError> {
    let response = req.send().await.map_err(|e| {
        let detail = chain(&e);
        if e.is_connect() {
            let hint = if find_tls_error(&e).is_some() {
                " (the server's TLS certificate was not accepted)"
            } else {
                ""
            };
            SendError::transient(format!("could not connect to {provider}{hint}: {detail}"))
        } else if e.is_builder() {
            SendError::permanent(format!("could not build the {provider} request: {detail}"))
        } else if e.is_timeout() {
            SendError::ambiguous(format!(
                "{provider} did not answer in time after the request was sent; it may have accepted the message, so it is not resent automatically: {detail}"
            ))
        } else {
            SendError::ambiguous(format!(
                "the connection to {provider} failed after the request was sent; it may have accepted the message, so it is not resent automatically: {detail}"
            ))
        }
    })?;
    Ok(read(response).await)
}

/// Sends a read-only request (a health check) and maps a failure to a health report.
pub(crate) async fn probe(
    req: reqwest::RequestBuilder,
    provider: &str,
) -> Result<Reply, HealthReport> {
    let response = req.send().await.map_err(|e| {
        let detail = chain(&e);
        if find_tls_error(&e).is_some() {
            HealthReport::unhealthy(
                reason::TLS_ERROR,
                format!("TLS with {provider} failed: {detail}"),
            )
        } else if e.is_timeout() {
            HealthReport::unhealthy(
                reason::TIMEOUT,
                format!("{provider} did not answer in time: {detail}"),
            )
        } else {
            HealthReport::unhealthy(
                reason::UNREACHABLE,
                format!("could not reach {provider}: {detail}"),
            )
        }
    })?;
    Ok(read(response).await)
}

/// Reads status, headers and body. A body that can not be read is kept as an explanation:
/// the status already tells what happened.
pub(crate) async fn read(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = match response.text().await {
        Ok(body) => body,
        Err(e) => format!("(response body could not be read: {})", chain(&e)),
    };
    Reply {
        status,
        headers,
        body,
    }
}

/// What an error or health message says of a response body that is not in the provider's
/// documented error format: its size only, never its content. A sender's `baseUrl` is set by
/// a tenant and may point at any service in the cluster; copying what that service answered
/// into a status would make the operator a way to read internal services (an error page
/// with a connection string, say).
pub(crate) fn describe_body(body: &str) -> String {
    let body = body.trim();
    if body.is_empty() {
        "an empty response body".to_string()
    } else {
        format!(
            "a response body that is not in the provider's error format ({} bytes, not shown)",
            body.len()
        )
    }
}

/// `Retry-After` as seconds or an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap, now: jiff::Timestamp) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    until(parse_date(value)?, now)
}

/// Mailgun puts the time to retry into its message: `... try again after <date>`.
pub(crate) fn retry_after_in_text(text: &str, now: jiff::Timestamp) -> Option<Duration> {
    let lower = text.to_ascii_lowercase();
    let marker = "try again after";
    let start = lower.find(marker)? + marker.len();
    let rest = text.get(start..)?.trim_start_matches([':', ' ']);
    // The date runs to the end of the sentence; try the longest candidate first.
    let rest = rest.trim_end_matches(['.', '"', '}', ' ']);
    until(parse_date(rest)?, now)
}

fn parse_date(s: &str) -> Option<jiff::Timestamp> {
    let s = s.trim();
    if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        return Some(ts);
    }
    // RFC 2822 knows GMT and UT; servers also write UTC.
    let s = s
        .strip_suffix(" UTC")
        .map_or_else(|| s.to_string(), |p| format!("{p} GMT"));
    jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(&s)
        .ok()
}

fn until(when: jiff::Timestamp, now: jiff::Timestamp) -> Option<Duration> {
    let seconds = when.as_second().saturating_sub(now.as_second());
    Some(Duration::from_secs(u64::try_from(seconds).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn now() -> jiff::Timestamp {
        "2026-01-10T12:00:00Z".parse().expect("timestamp")
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("42"));
        assert_eq!(retry_after(&h, now()), Some(Duration::from_secs(42)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Sat, 10 Jan 2026 12:01:30 GMT"),
        );
        assert_eq!(retry_after(&h, now()), Some(Duration::from_secs(90)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now()), None);
    }

    #[test]
    fn a_retry_date_in_the_past_means_retry_now() {
        let mut h = HeaderMap::new();
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Sat, 10 Jan 2026 11:00:00 GMT"),
        );
        assert_eq!(retry_after(&h, now()), Some(Duration::ZERO));
    }

    #[test]
    fn mailgun_style_retry_text_is_understood() {
        for text in [
            "Domain example.com is not allowed to send: rate limit exceeded, try again after Sat, 10 Jan 2026 12:05:00 UTC",
            "Too many requests. Try again after: Sat, 10 Jan 2026 12:05:00 GMT.",
            "try again after 2026-01-10T12:05:00Z",
        ] {
            assert_eq!(
                retry_after_in_text(text, now()),
                Some(Duration::from_secs(300)),
                "{text}"
            );
        }
        assert_eq!(retry_after_in_text("Forbidden", now()), None);
    }

    #[test]
    fn an_unexpected_body_is_described_never_quoted() {
        let body = "<html>internal error: db_password=hunter2</html>";
        let said = describe_body(body);
        assert!(
            !said.contains("hunter2") && !said.contains("html"),
            "{said}"
        );
        assert!(said.contains(&body.len().to_string()), "{said}");
        assert_eq!(describe_body("  \n"), "an empty response body");
    }
}
