//! A MailerSend-compatible server on loopback that answers every send after a fixed delay,
//! standing in for a provider's network and processing time.
//!
//! The tests' mock (tests/support/mock_mailersend.rs) scripts answers and keeps every body for
//! assertions; a benchmark needs neither, only counts and a latency, so it has its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

/// The API token the mock accepts (it lives in the bench's Secret).
pub const TOKEN: &str = "bench-token";

#[derive(Default)]
struct Counters {
    sends: AtomicU64,
    health_checks: AtomicU64,
    refused: AtomicU64,
}

/// Calls the mock has answered so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Calls {
    /// `POST /email`
    pub sends: u64,
    /// `GET /api-quota`
    pub health_checks: u64,
    /// Requests with a wrong token.
    pub refused: u64,
}

impl Calls {
    pub fn total(&self) -> u64 {
        self.sends + self.health_checks + self.refused
    }

    pub fn since(&self, before: &Calls) -> Calls {
        Calls {
            sends: self.sends - before.sends,
            health_checks: self.health_checks - before.health_checks,
            refused: self.refused - before.refused,
        }
    }
}

struct Shared {
    latency: Duration,
    counters: Counters,
}

pub struct MockProvider {
    /// For `spec.mailersend.baseUrl`.
    pub base_url: String,
    shared: Arc<Shared>,
}

impl MockProvider {
    pub async fn start(latency: Duration) -> anyhow::Result<MockProvider> {
        let shared = Arc::new(Shared {
            latency,
            counters: Counters::default(),
        });
        let app = Router::new()
            .route("/v1/email", post(send))
            .route("/v1/api-quota", get(quota))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("mock provider stopped: {e}");
            }
        });
        Ok(MockProvider {
            base_url: format!("http://{addr}/v1"),
            shared,
        })
    }

    pub fn calls(&self) -> Calls {
        let c = &self.shared.counters;
        Calls {
            sends: c.sends.load(Ordering::Relaxed),
            health_checks: c.health_checks.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
        }
    }
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {TOKEN}"))
}

// The body is taken (and dropped) so that keep-alive connections are reused as with a real
// server; an unread body can make hyper close the connection.
async fn send(State(shared): State<Arc<Shared>>, headers: HeaderMap, _body: Bytes) -> Response {
    if !authorized(&headers) {
        shared.counters.refused.fetch_add(1, Ordering::Relaxed);
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"message":"Unauthenticated."}"#,
        )
            .into_response();
    }
    let id = shared.counters.sends.fetch_add(1, Ordering::Relaxed) + 1;
    tokio::time::sleep(shared.latency).await;
    (
        StatusCode::ACCEPTED,
        [("x-message-id", format!("bench-{id}"))],
    )
        .into_response()
}

async fn quota(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !authorized(&headers) {
        shared.counters.refused.fetch_add(1, Ordering::Relaxed);
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"message":"Unauthenticated."}"#,
        )
            .into_response();
    }
    shared
        .counters
        .health_checks
        .fetch_add(1, Ordering::Relaxed);
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        r#"{"quota":100000,"remaining":100000,"reset":"2099-01-01T00:00:00Z"}"#,
    )
        .into_response()
}
