//! A local server that behaves as Mailgun documents for sends and their events: HTTP Basic
//! `api:<key>` (a plain-text `Forbidden` 401 otherwise), `POST /v3/{domain}/messages` as a
//! multipart form (the `h:Message-Id` header is kept as the message id, `v:` variables come
//! back as `user-variables`), and `GET /v3/{domain}/events` filtered by `message-id`, in pages
//! linked by `paging.next`, with an `accepted` event that shows only some time after the
//! message was accepted (Mailgun's events arrive late). Failures are injected per call.
#![allow(dead_code, clippy::result_large_err)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};

use crate::common::{Recorded, multipart};

/// What the next `POST .../messages` does instead of a clean 200.
#[derive(Clone, Debug)]
pub enum Inject {
    /// Keep the message, then answer 500 (the answer got lost).
    AcceptThenFail,
    /// Answer 500 without keeping the message.
    Fail,
}

#[derive(Clone, Debug)]
pub struct Accepted {
    pub message_id: String,
    pub variables: serde_json::Map<String, Value>,
    pub subject: String,
    at: Instant,
}

struct Inner {
    key: String,
    domain: String,
    events_late: Duration,
    page_size: usize,
    inject: VecDeque<Inject>,
    events_inject: VecDeque<(u16, String)>,
    accepted: Vec<Accepted>,
    /// Events of other senders under the same Message-ID (they carry other variables).
    foreign: Vec<Value>,
    event_requests: usize,
}

#[derive(Clone)]
pub struct MockMailgun {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl MockMailgun {
    /// A server for `domain` with API key `key`, whose events show `events_late` after
    /// acceptance.
    pub async fn start(key: &str, domain: &str, events_late: Duration) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            key: key.into(),
            domain: domain.into(),
            events_late,
            page_size: 300,
            inject: VecDeque::new(),
            events_inject: VecDeque::new(),
            accepted: Vec::new(),
            foreign: Vec::new(),
            event_requests: 0,
        }));
        let app = Router::new()
            .route("/v3/{domain}/messages", post(send))
            .route("/v3/{domain}/events", get(events))
            .route("/v4/domains/{domain}", get(domain_info))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the mock Mailgun server");
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockMailgun {
            url: format!("http://{addr}"),
            inner,
        }
    }

    pub fn inject(&self, what: Inject) {
        self.inner.lock().unwrap().inject.push_back(what);
    }

    /// The next events request answers this status and body.
    pub fn inject_events(&self, status: u16, body: &str) {
        self.inner
            .lock()
            .unwrap()
            .events_inject
            .push_back((status, body.into()));
    }

    /// Events per page (Mailgun's `limit`, at most 300).
    pub fn page_size(&self, n: usize) {
        self.inner.lock().unwrap().page_size = n;
    }

    /// An event of someone else's message under `message_id`, listed before ours.
    pub fn foreign_event(&self, message_id: &str) {
        self.inner.lock().unwrap().foreign.push(json!({
            "event": "accepted",
            "message": {"headers": {"message-id": message_id}},
            "user-variables": {"kmailops-delivery-key": "someone-else"},
        }));
    }

    pub fn accepted(&self) -> Vec<Accepted> {
        self.inner.lock().unwrap().accepted.clone()
    }

    pub fn event_requests(&self) -> usize {
        self.inner.lock().unwrap().event_requests
    }
}

fn forbidden() -> Response {
    (StatusCode::UNAUTHORIZED, "Forbidden").into_response()
}

fn authorized(inner: &Inner, headers: &HeaderMap, domain: &str) -> Result<(), Response> {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("api:{}", inner.key))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return Err(forbidden());
    }
    if domain != inner.domain {
        return Err((
            StatusCode::NOT_FOUND,
            json!({"message": format!("Domain not found: {domain}")}).to_string(),
        )
            .into_response());
    }
    Ok(())
}

fn bare(id: &str) -> String {
    id.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string()
}

async fn send(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(domain): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = inner.lock().unwrap();
    if let Err(r) = authorized(&s, &headers, &domain) {
        return r;
    }
    let recorded = Recorded {
        method: "POST".into(),
        path: String::new(),
        headers: headers.clone(),
        body: body.to_vec(),
    };
    let parts = multipart(&recorded);
    let field = |name: &str| parts.iter().find(|p| p.name == name).map(|p| p.text());
    if field("from").is_none() || field("to").is_none() {
        return (
            StatusCode::BAD_REQUEST,
            json!({"message": "from and to are required"}).to_string(),
        )
            .into_response();
    }
    let message_id = field("h:Message-Id")
        .map(|id| bare(&id))
        .unwrap_or_else(|| format!("{}@{domain}", s.accepted.len() + 1));
    let variables = parts
        .iter()
        .filter_map(|p| {
            p.name
                .strip_prefix("v:")
                .map(|n| (n.to_string(), Value::String(p.text())))
        })
        .collect();
    let inject = s.inject.pop_front();
    if matches!(inject, Some(Inject::Fail)) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"message": "Internal error"}).to_string(),
        )
            .into_response();
    }
    s.accepted.push(Accepted {
        message_id: message_id.clone(),
        variables,
        subject: field("subject").unwrap_or_default(),
        at: Instant::now(),
    });
    if matches!(inject, Some(Inject::AcceptThenFail)) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"message": "Internal error"}).to_string(),
        )
            .into_response();
    }
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        json!({"id": format!("<{message_id}>"), "message": "Queued. Thank you."}).to_string(),
    )
        .into_response()
}

async fn domain_info(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(domain): Path<String>,
    headers: HeaderMap,
) -> Response {
    let s = inner.lock().unwrap();
    if let Err(r) = authorized(&s, &headers, &domain) {
        return r;
    }
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        json!({"domain": {"name": domain, "state": "active", "is_disabled": false}}).to_string(),
    )
        .into_response()
}

async fn events(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(domain): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let q: Vec<(String, String)> = reqwest::Url::parse(&format!("http://mock{uri}"))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default();
    let param = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let mut s = inner.lock().unwrap();
    s.event_requests += 1;
    if let Err(r) = authorized(&s, &headers, &domain) {
        return r;
    }
    if let Some((status, body)) = s.events_inject.pop_front() {
        return (StatusCode::from_u16(status).unwrap(), body).into_response();
    }
    let limit = param("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(300);
    if limit > 300 {
        return (
            StatusCode::BAD_REQUEST,
            json!({"message": "limit must be at most 300"}).to_string(),
        )
            .into_response();
    }
    let wanted = param("message-id").map(|m| bare(&m));
    let now = Instant::now();
    let mut all: Vec<Value> = s
        .foreign
        .iter()
        .filter(|e| {
            wanted.is_none() || e["message"]["headers"]["message-id"].as_str() == wanted.as_deref()
        })
        .cloned()
        .collect();
    all.extend(
        s.accepted
            .iter()
            .filter(|a| now >= a.at + s.events_late)
            .filter(|a| wanted.as_deref().is_none_or(|w| w == a.message_id))
            .map(|a| {
                json!({
                    "event": "accepted",
                    "message": {"headers": {"message-id": a.message_id, "subject": a.subject}},
                    "user-variables": a.variables,
                })
            }),
    );
    let size = limit.min(s.page_size).max(1);
    let page: usize = param("page").and_then(|p| p.parse().ok()).unwrap_or(0);
    let items: Vec<Value> = all.into_iter().skip(page * size).take(size).collect();
    let mut next = reqwest::Url::parse(&format!("http://mock{uri}")).unwrap();
    let kept: Vec<(String, String)> = q.iter().filter(|(k, _)| k != "page").cloned().collect();
    next.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair("page", &(page + 1).to_string());
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let next = format!(
        "http://{host}{}?{}",
        next.path(),
        next.query().unwrap_or("")
    );
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        json!({"items": items, "paging": {"next": next, "previous": next, "first": next, "last": next}})
            .to_string(),
    )
        .into_response()
}
