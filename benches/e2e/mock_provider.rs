//! A local provider on loopback that answers every call after a fixed delay, standing in for
//! a provider's network and processing time: MailerSend-compatible by default, or
//! Postmark-compatible with `BENCH_PROVIDER=postmark`, which also answers the message search by
//! metadata (`GET /messages/outbound`) that the operator makes before a first send, with the
//! same delay, so the bench shows what those look-ups cost.
//!
//! The tests' mocks (tests/support/mock_*.rs) script answers and keep every body for
//! assertions; a benchmark needs neither, only counts and a latency, so it has its own.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// The API token the mock accepts (it lives in the bench's Secret).
pub const TOKEN: &str = "bench-token";

/// Which provider the mock speaks (`BENCH_PROVIDER`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `POST /v1/email` (202, `X-Message-Id`), `GET /v1/api-quota`; nothing to search.
    MailerSend,
    /// `POST /email` (200 `MessageID`), `GET /server`, and `GET /messages/outbound` by
    /// metadata: the operator asks it before every first send.
    Postmark,
}

impl Kind {
    /// `BENCH_PROVIDER`: `mailersend` (the default) or `postmark`.
    pub fn from_env() -> anyhow::Result<Kind> {
        match std::env::var("BENCH_PROVIDER").as_deref() {
            Err(_) | Ok("") | Ok("mailersend") => Ok(Kind::MailerSend),
            Ok("postmark") => Ok(Kind::Postmark),
            Ok(other) => {
                anyhow::bail!("BENCH_PROVIDER={other} is not known: use mailersend or postmark")
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::MailerSend => "mailersend",
            Kind::Postmark => "postmark",
        }
    }
}

#[derive(Default)]
struct Counters {
    sends: AtomicU64,
    health_checks: AtomicU64,
    refused: AtomicU64,
    lookups: AtomicU64,
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
    /// Message searches (Postmark's `GET /messages/outbound`).
    pub lookups: u64,
}

impl Calls {
    pub fn total(&self) -> u64 {
        self.sends + self.health_checks + self.refused + self.lookups
    }

    pub fn since(&self, before: &Calls) -> Calls {
        Calls {
            sends: self.sends - before.sends,
            health_checks: self.health_checks - before.health_checks,
            refused: self.refused - before.refused,
            lookups: self.lookups - before.lookups,
        }
    }
}

struct Shared {
    latency: Duration,
    counters: Counters,
    /// Postmark: the message id of each delivery key accepted, for the search.
    accepted: Mutex<HashMap<String, String>>,
}

pub struct MockProvider {
    pub kind: Kind,
    /// For the provider's `baseUrl`.
    pub base_url: String,
    shared: Arc<Shared>,
}

impl MockProvider {
    pub async fn start(kind: Kind, latency: Duration) -> anyhow::Result<MockProvider> {
        let shared = Arc::new(Shared {
            latency,
            counters: Counters::default(),
            accepted: Mutex::new(HashMap::new()),
        });
        let (app, base) = match kind {
            Kind::MailerSend => (
                Router::new()
                    .route("/v1/email", post(send))
                    .route("/v1/api-quota", get(quota)),
                "/v1",
            ),
            Kind::Postmark => (
                Router::new()
                    .route("/email", post(postmark_send))
                    .route("/server", get(postmark_server))
                    .route("/messages/outbound", get(postmark_search)),
                "",
            ),
        };
        let app = app.with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("mock provider stopped: {e}");
            }
        });
        Ok(MockProvider {
            kind,
            base_url: format!("http://{addr}{base}"),
            shared,
        })
    }

    /// The provider part of the bench's EmailSenderConfig spec: its field name and value,
    /// with the token in the Secret `secret`, key `token`.
    pub fn sender_spec(&self, secret: &str) -> (&'static str, Value) {
        match self.kind {
            Kind::MailerSend => (
                "mailersend",
                json!({
                    "apiTokenSecretRef": {"name": secret, "key": "token"},
                    "baseUrl": self.base_url,
                }),
            ),
            Kind::Postmark => (
                "postmark",
                json!({
                    "serverTokenSecretRef": {"name": secret, "key": "token"},
                    "baseUrl": self.base_url,
                }),
            ),
        }
    }

    pub fn calls(&self) -> Calls {
        let c = &self.shared.counters;
        Calls {
            sends: c.sends.load(Ordering::Relaxed),
            health_checks: c.health_checks.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            lookups: c.lookups.load(Ordering::Relaxed),
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

// ---- Postmark ----------------------------------------------------------------------------

const POSTMARK_TOKEN_HEADER: &str = "x-postmark-server-token";
/// The metadata entry the operator puts its delivery key in (src/provider/postmark.rs).
const DELIVERY_KEY_METADATA: &str = "kmailops-delivery";

fn postmark_json(status: StatusCode, body: Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// As Postmark: HTTP 401 with `ErrorCode` 10 for a missing or wrong server token; `None`
/// for the right one.
fn postmark_refused(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let ok = headers
        .get(POSTMARK_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == TOKEN);
    if ok {
        return None;
    }
    shared.counters.refused.fetch_add(1, Ordering::Relaxed);
    Some(postmark_json(
        StatusCode::UNAUTHORIZED,
        json!({"ErrorCode": 10, "Message": "Bad or missing Server API token."}),
    ))
}

async fn postmark_send(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = postmark_refused(&shared, &headers) {
        return r;
    }
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return postmark_json(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"ErrorCode": 409, "Message": "Received invalid JSON input."}),
        );
    };
    let n = shared.counters.sends.fetch_add(1, Ordering::Relaxed) + 1;
    let id = format!("00000000-0000-4000-8000-{n:012}");
    if let Some(key) = message["Metadata"][DELIVERY_KEY_METADATA].as_str() {
        shared
            .accepted
            .lock()
            .unwrap()
            .insert(key.to_string(), id.clone());
    }
    tokio::time::sleep(shared.latency).await;
    postmark_json(
        StatusCode::OK,
        json!({
            "To": message["To"],
            "SubmittedAt": "2026-01-01T00:00:00Z",
            "MessageID": id,
            "ErrorCode": 0,
            "Message": "OK",
        }),
    )
}

async fn postmark_server(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(r) = postmark_refused(&shared, &headers) {
        return r;
    }
    shared
        .counters
        .health_checks
        .fetch_add(1, Ordering::Relaxed);
    postmark_json(StatusCode::OK, json!({"ID": 1, "Name": "bench"}))
}

/// `GET /messages/outbound?count=N&offset=M&metadata_<key>=<value>`, after the same delay as
/// a send. As Postmark: `count` (1-500) and `offset` are required.
async fn postmark_search(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let q: HashMap<String, String> = reqwest::Url::parse(&format!("http://mock{uri}"))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default();
    if let Some(r) = postmark_refused(&shared, &headers) {
        return r;
    }
    shared.counters.lookups.fetch_add(1, Ordering::Relaxed);
    let count = q.get("count").and_then(|c| c.parse::<usize>().ok());
    if !count.is_some_and(|c| (1..=500).contains(&c)) || !q.contains_key("offset") {
        return postmark_json(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"ErrorCode": 300, "Message": "The 'count' (1-500) and 'offset' query parameters are required."}),
        );
    }
    tokio::time::sleep(shared.latency).await;
    let wanted = q.get(&format!("metadata_{DELIVERY_KEY_METADATA}"));
    let found: Vec<Value> = wanted
        .and_then(|key| shared.accepted.lock().unwrap().get(key).cloned().map(|id| (key.clone(), id)))
        .map(|(key, id)| {
            json!({"MessageID": id, "Metadata": {DELIVERY_KEY_METADATA: key}, "Status": "Sent"})
        })
        .into_iter()
        .collect();
    postmark_json(
        StatusCode::OK,
        json!({"TotalCount": found.len(), "Messages": found}),
    )
}
