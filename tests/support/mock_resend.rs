//! A local server that behaves as Resend documents: Bearer keys (401 `missing_api_key`, 403
//! `invalid_api_key`, 401 `restricted_api_key` for a sending-only key outside `/emails`),
//! `POST /emails` with its validation, the `Idempotency-Key` store (same key and payload: the
//! first answer, nothing sent; other payload: 409 `invalid_idempotent_request`; first still in
//! flight: 409 `concurrent_idempotent_requests`), and `GET /domains`. Failures are injected
//! per call, including "accepted, then answered 500" and "accepted, then answered late".
#![allow(dead_code, clippy::result_large_err)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// What the next `POST /emails` does instead of a clean 200.
#[derive(Clone, Debug)]
pub enum Inject {
    /// Refuse without sending: status, error name, message, extra headers.
    Refuse(u16, &'static str, String, Vec<(&'static str, String)>),
    /// Send the email, then answer 500 `application_error` (the answer got lost).
    AcceptThenFail,
    /// Send the email, then answer only after this long.
    AcceptThenStall(Duration),
    /// An outage in front of the API (a load balancer's 502/503): answered before the key
    /// or the idempotency record is looked at, so even a repeat of an accepted email fails.
    Outage(u16),
}

/// One email the server sent.
#[derive(Clone, Debug)]
pub struct SentEmail {
    pub id: String,
    pub idempotency_key: Option<String>,
    pub body: Value,
}

#[derive(Default)]
struct Inner {
    key: String,
    restricted: bool,
    domains: Vec<(String, String)>,
    inject: VecDeque<Inject>,
    /// key -> (payload, status, answer)
    idempotent: HashMap<String, (Value, u16, Value)>,
    in_flight: HashSet<String>,
    sent: Vec<SentEmail>,
    posts: usize,
    last_headers: Option<HeaderMap>,
}

#[derive(Clone)]
pub struct MockResend {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

fn error(status: u16, name: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        json!({"statusCode": status, "name": name, "message": message}).to_string(),
    )
        .into_response()
}

fn ok(body: &Value) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

impl MockResend {
    /// A server that accepts `key`, with `example.com` verified.
    pub async fn start(key: &str) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            key: key.to_string(),
            domains: vec![("example.com".into(), "verified".into())],
            ..Inner::default()
        }));
        let app = Router::new()
            .route("/emails", post(send))
            .route("/domains", get(domains))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the mock Resend server");
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockResend {
            url: format!("http://{addr}"),
            inner,
        }
    }

    /// The key may only send ("sending access"): `/domains` answers 401 `restricted_api_key`.
    pub fn restrict_key(&self) {
        self.inner.lock().unwrap().restricted = true;
    }

    pub fn set_domains(&self, domains: &[(&str, &str)]) {
        self.inner.lock().unwrap().domains = domains
            .iter()
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect();
    }

    pub fn inject(&self, what: Inject) {
        self.inner.lock().unwrap().inject.push_back(what);
    }

    /// Emails actually sent (repeats answered from the idempotency store are not).
    pub fn sent(&self) -> Vec<SentEmail> {
        self.inner.lock().unwrap().sent.clone()
    }

    /// `POST /emails` calls that arrived, answered or not.
    pub fn posts(&self) -> usize {
        self.inner.lock().unwrap().posts
    }

    pub fn last_headers(&self) -> HeaderMap {
        self.inner
            .lock()
            .unwrap()
            .last_headers
            .clone()
            .unwrap_or_default()
    }
}

/// 401 without a key, 403 with a wrong one.
fn authenticate(inner: &Inner, headers: &HeaderMap) -> Result<(), Response> {
    let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return Err(error(
            401,
            "missing_api_key",
            "Missing API key in the authorization header. Include the following header Authorization: Bearer YOUR_API_KEY in the request.",
        ));
    };
    if auth.strip_prefix("Bearer ") != Some(inner.key.as_str()) {
        // Resend does not echo keys; the test that a provider scrubs echoed keys needs one
        // that does, so this answer quotes the header.
        return Err(error(
            403,
            "invalid_api_key",
            &format!("API key is invalid ({auth})"),
        ));
    }
    Ok(())
}

fn validate(body: &Value) -> Result<(), Response> {
    for field in ["from", "subject"] {
        if !body.get(field).is_some_and(Value::is_string) {
            return Err(error(
                422,
                "missing_required_field",
                &format!("Missing `{field}` field."),
            ));
        }
    }
    let to = match body.get("to") {
        Some(Value::String(_)) => 1,
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    };
    if !(1..=50).contains(&to) {
        return Err(error(
            422,
            "validation_error",
            "The `to` field must contain between 1 and 50 addresses.",
        ));
    }
    if body.get("text").is_none() && body.get("html").is_none() {
        return Err(error(
            422,
            "validation_error",
            "Missing `html` or `text` field.",
        ));
    }
    if let Some(tags) = body.get("tags").and_then(Value::as_array) {
        let ok = |v: &Value| {
            v.as_str().is_some_and(|s| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            })
        };
        if !tags.iter().all(|t| ok(&t["name"]) && ok(&t["value"])) {
            return Err(error(
                422,
                "validation_error",
                "Tags should only contain ASCII letters, numbers, underscores, or dashes.",
            ));
        }
    }
    Ok(())
}

async fn send(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap, body: Bytes) -> Response {
    let payload: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (inject, id) = {
        let mut s = inner.lock().unwrap();
        s.posts += 1;
        s.last_headers = Some(headers.clone());
        if let Some(Inject::Outage(status)) = s.inject.front() {
            let status = *status;
            s.inject.pop_front();
            return error(status, "internal_server_error", "Service unavailable.");
        }
        if let Err(r) = authenticate(&s, &headers) {
            return r;
        }
        if let Some(k) = &key {
            if k.is_empty() || k.len() > 256 {
                return error(
                    400,
                    "invalid_idempotency_key",
                    "The key must be between 1-256 chars.",
                );
            }
            if s.in_flight.contains(k) {
                return error(
                    409,
                    "concurrent_idempotent_requests",
                    "Same idempotency key used while original request is still in progress.",
                );
            }
            if let Some((first, status, answer)) = s.idempotent.get(k) {
                if *first == payload {
                    let status = *status;
                    let answer = answer.clone();
                    return (
                        StatusCode::from_u16(status).unwrap(),
                        [("content-type", "application/json")],
                        answer.to_string(),
                    )
                        .into_response();
                }
                return error(
                    409,
                    "invalid_idempotent_request",
                    "Same idempotency key used with a different request payload. Change your idempotency key or payload.",
                );
            }
        }
        if let Err(r) = validate(&payload) {
            return r;
        }
        let inject = s.inject.pop_front();
        if let Some(Inject::Refuse(status, name, message, extra)) = &inject {
            let mut r = error(*status, name, message);
            for (k, v) in extra {
                r.headers_mut().insert(*k, v.parse().unwrap());
            }
            return r;
        }
        // Accepted: the email is sent now, whatever happens to the answer.
        let id = format!("4ef9a417-02e9-4d39-ad75-9611e0fc{:04}", s.sent.len() + 1);
        s.sent.push(SentEmail {
            id: id.clone(),
            idempotency_key: key.clone(),
            body: payload.clone(),
        });
        if let Some(k) = &key {
            s.idempotent
                .insert(k.clone(), (payload.clone(), 200, json!({"id": id})));
            if matches!(inject, Some(Inject::AcceptThenStall(_))) {
                s.in_flight.insert(k.clone());
            }
        }
        (inject, id)
    };
    match inject {
        Some(Inject::AcceptThenFail) => {
            error(500, "application_error", "An unexpected error occurred.")
        }
        Some(Inject::AcceptThenStall(d)) => {
            // The first request finishes on the server even when its client gave up (and
            // axum dropped this handler).
            if let Some(k) = key {
                let inner = inner.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    inner.lock().unwrap().in_flight.remove(&k);
                });
            }
            tokio::time::sleep(d).await;
            ok(&json!({"id": id}))
        }
        _ => ok(&json!({"id": id})),
    }
}

async fn domains(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap) -> Response {
    let s = inner.lock().unwrap();
    if let Err(r) = authenticate(&s, &headers) {
        return r;
    }
    if s.restricted {
        return error(
            401,
            "restricted_api_key",
            "This API key is restricted to only send emails",
        );
    }
    let data: Vec<Value> = s
        .domains
        .iter()
        .enumerate()
        .map(|(i, (name, status))| {
            json!({"id": format!("d91cd9bd-1176-453e-8fc1-35364d38042{i}"), "name": name, "status": status,
                   "created_at": "2026-04-26 20:21:26.347412+00", "region": "us-east-1"})
        })
        .collect();
    ok(&json!({"object": "list", "data": data}))
}
