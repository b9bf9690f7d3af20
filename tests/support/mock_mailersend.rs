//! A local MailerSend-compatible HTTP server for controller tests: counts `POST /email` calls,
//! keeps their bodies, and answers from a script (then 202 + `X-Message-Id` by default).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

/// One scripted answer.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 202 with `X-Message-Id`.
    Accepted,
    /// Any status with a JSON body and extra headers.
    Status(u16, String, Vec<(String, String)>),
    /// Wait, then answer 202 (a slow provider).
    Slow(Duration),
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Reply>,
    calls: Vec<(Instant, serde_json::Value)>,
    next_id: u64,
    always: Option<Reply>,
    /// The message ids and bodies of the calls answered (or to be answered) 202.
    accepted: Vec<(String, serde_json::Value)>,
}

#[derive(Clone)]
pub struct MockMailerSend {
    pub base_url: String,
    inner: Arc<Mutex<Inner>>,
}

impl MockMailerSend {
    /// Starts the server on a free loopback port.
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/v1/email", post(send))
            .route("/v1/api-quota", get(quota))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the mock MailerSend server");
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            base_url: format!("http://{addr}/v1"),
            inner,
        }
    }

    /// Queues answers for the next calls.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.lock().unwrap().script.extend(replies);
    }

    /// Answers every later call with `reply` (the script is used up first).
    pub fn always(&self, reply: Reply) {
        self.inner.lock().unwrap().always = Some(reply);
    }

    /// How many `POST /email` calls arrived.
    pub fn calls(&self) -> usize {
        self.inner.lock().unwrap().calls.len()
    }

    /// When each call arrived.
    pub fn call_times(&self) -> Vec<Instant> {
        self.inner
            .lock()
            .unwrap()
            .calls
            .iter()
            .map(|c| c.0)
            .collect()
    }

    /// The JSON bodies of all calls.
    /// Message id and body of every message the provider accepted.
    pub fn accepted(&self) -> Vec<(String, serde_json::Value)> {
        self.inner.lock().unwrap().accepted.clone()
    }

    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.inner
            .lock()
            .unwrap()
            .calls
            .iter()
            .map(|c| c.1.clone())
            .collect()
    }
}

async fn send(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap, body: Bytes) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer test-token") {
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"message":"Unauthenticated."}"#,
        )
            .into_response();
    }
    let (reply, id) = {
        let mut inner = inner.lock().unwrap();
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        inner.calls.push((Instant::now(), json));
        inner.next_id += 1;
        let reply = inner
            .script
            .pop_front()
            .or_else(|| inner.always.clone())
            .unwrap_or(Reply::Accepted);
        if matches!(reply, Reply::Accepted | Reply::Slow(_)) {
            // Accepted by the provider even when the caller is gone before the answer.
            let id = format!("ms-{:04}", inner.next_id);
            let body = inner.calls.last().map(|c| c.1.clone()).unwrap_or_default();
            inner.accepted.push((id, body));
        }
        (reply, inner.next_id)
    };
    let accepted = move || {
        (
            StatusCode::ACCEPTED,
            [("x-message-id", format!("ms-{id:04}"))],
        )
            .into_response()
    };
    match reply {
        Reply::Accepted => accepted(),
        Reply::Slow(d) => {
            tokio::time::sleep(d).await;
            accepted()
        }
        Reply::Status(code, body, extra) => {
            let mut resp = (
                StatusCode::from_u16(code).unwrap(),
                [("content-type", "application/json")],
                body,
            )
                .into_response();
            for (k, v) in extra {
                resp.headers_mut().insert(
                    axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            resp
        }
    }
}

async fn quota(headers: HeaderMap) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer test-token") {
        return (
            StatusCode::UNAUTHORIZED,
            [("content-type", "application/json")],
            r#"{"message":"Unauthenticated."}"#,
        )
            .into_response();
    }
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        r#"{"quota":3000,"remaining":2999,"reset":"2026-12-01T00:00:00Z"}"#,
    )
        .into_response()
}
