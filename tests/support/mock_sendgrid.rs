//! A local server that behaves as SendGrid v3 documents: Bearer keys (401 `{"errors":[...]}`
//! for a wrong one, 403 for a key without `mail.send`), `POST /v3/mail/send` with its
//! validation (400 with `errors[]` naming the field; each address once; at most 1,000
//! recipients; content text/plain before text/html), 202 with `X-Message-Id`, sandbox mode
//! answering 200, 429 with `X-RateLimit-*` headers, and `GET /v3/scopes`. Other failures are
//! injected per call.
#![allow(dead_code, clippy::result_large_err)]

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

#[derive(Clone, Debug)]
pub enum Inject {
    /// Answer with this status and body, extra headers; nothing sent.
    Raw(u16, String, Vec<(&'static str, String)>),
    /// The rate limit is used up: 429 with the reset this many seconds ahead.
    RateLimited(i64),
    /// Send, then answer 500.
    AcceptThenFail,
    /// Answer only after this long.
    Stall(Duration),
}

#[derive(Default)]
struct Inner {
    key: String,
    scopes: Vec<String>,
    inject: VecDeque<Inject>,
    /// What every call gets once `inject` is used up (`None`: the normal answer).
    always: Option<Inject>,
    sent: Vec<Value>,
    posts: usize,
    last_headers: Option<HeaderMap>,
}

#[derive(Clone)]
pub struct MockSendGrid {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

fn errors(status: u16, list: &[(&str, Option<&str>)]) -> Response {
    let errors: Vec<Value> = list
        .iter()
        .map(|(m, f)| json!({"message": m, "field": f, "help": null}))
        .collect();
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        json!({ "errors": errors }).to_string(),
    )
        .into_response()
}

impl MockSendGrid {
    pub async fn start(key: &str) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            key: key.to_string(),
            scopes: vec!["mail.send".into(), "user.profile.read".into()],
            ..Inner::default()
        }));
        let app = Router::new()
            .route("/v3/mail/send", post(send))
            .route("/v3/scopes", get(scopes))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the mock SendGrid server");
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockSendGrid {
            url: format!("http://{addr}"),
            inner,
        }
    }

    pub fn set_scopes(&self, scopes: &[&str]) {
        self.inner.lock().unwrap().scopes = scopes.iter().map(|s| s.to_string()).collect();
    }

    pub fn inject(&self, what: Inject) {
        self.inner.lock().unwrap().inject.push_back(what);
    }

    /// Injects `what` into every later call once the queued injections are used up; `None`
    /// goes back to the normal answer.
    pub fn always(&self, what: Option<Inject>) {
        self.inner.lock().unwrap().always = what;
    }

    /// The message id (as `X-Message-Id` gives it) and payload of every message taken,
    /// including those whose answer said otherwise (`AcceptThenFail`) or came late (`Stall`).
    pub fn accepted(&self) -> Vec<(String, Value)> {
        self.inner
            .lock()
            .unwrap()
            .sent
            .iter()
            .enumerate()
            .map(|(i, p)| (message_id(i + 1), p.clone()))
            .collect()
    }

    pub fn sent(&self) -> Vec<Value> {
        self.inner.lock().unwrap().sent.clone()
    }

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

fn authenticate(inner: &Inner, headers: &HeaderMap) -> Result<(), Response> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if auth.strip_prefix("Bearer ") != Some(inner.key.as_str()) {
        // SendGrid does not echo keys; this one does, so redaction has something to scrub.
        return Err(errors(
            401,
            &[(
                &format!(
                    "The provided authorization grant is invalid, expired, or revoked ({auth})"
                ),
                None,
            )],
        ));
    }
    Ok(())
}

fn validate(p: &Value) -> Result<(), Response> {
    let Some(pers) = p["personalizations"].as_array().filter(|a| !a.is_empty()) else {
        return Err(errors(
            400,
            &[(
                "The personalizations field is required and must have at least one personalization.",
                Some("personalizations"),
            )],
        ));
    };
    if p["from"]["email"].as_str().is_none() {
        return Err(errors(
            400,
            &[(
                "The from object must be provided for every email send. It is an object that requires the email parameter, but may also contain a name parameter.",
                Some("from"),
            )],
        ));
    }
    let mut seen = HashSet::new();
    let mut count = 0;
    for (i, one) in pers.iter().enumerate() {
        if one["to"].as_array().is_none_or(|a| a.is_empty()) {
            return Err(errors(
                400,
                &[(
                    "The to array is required for all personalization objects, and must have at least one email object with a valid email address.",
                    Some(&format!("personalizations.{i}.to")),
                )],
            ));
        }
        for field in ["to", "cc", "bcc"] {
            for a in one[field].as_array().into_iter().flatten() {
                count += 1;
                let email = a["email"].as_str().unwrap_or_default().to_ascii_lowercase();
                if !seen.insert(email) {
                    return Err(errors(
                        400,
                        &[(
                            "Each email address in the personalization block should be unique between to, cc, and bcc. We found the first duplicate instance of [] in the personalizations.0.to field.",
                            Some(&format!("personalizations.{i}.{field}")),
                        )],
                    ));
                }
            }
        }
    }
    if count > 1000 {
        return Err(errors(
            400,
            &[(
                "The total number of recipients must be no more than 1000.",
                Some("personalizations"),
            )],
        ));
    }
    if p["subject"].as_str().is_none() && pers.iter().all(|x| x["subject"].is_null()) {
        return Err(errors(
            400,
            &[("The subject is required.", Some("subject"))],
        ));
    }
    let content = p["content"].as_array().cloned().unwrap_or_default();
    if content.is_empty() {
        return Err(errors(
            400,
            &[(
                "Unless a valid template_id is provided, the content parameter is required.",
                Some("content"),
            )],
        ));
    }
    let types: Vec<&str> = content.iter().filter_map(|c| c["type"].as_str()).collect();
    if let (Some(text), Some(html)) = (
        types.iter().position(|t| *t == "text/plain"),
        types.iter().position(|t| *t == "text/html"),
    ) && text > html
    {
        return Err(errors(
            400,
            &[(
                "If present, text/plain content must be first, followed by text/html, followed by any other content.",
                Some("content"),
            )],
        ));
    }
    if let Some(cats) = p["categories"].as_array()
        && cats.len() > 10
    {
        return Err(errors(
            400,
            &[(
                "Too many categories. You may only use 10 categories.",
                Some("categories"),
            )],
        ));
    }
    Ok(())
}

async fn send(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap, body: Bytes) -> Response {
    let (inject, n) = {
        let mut s = inner.lock().unwrap();
        s.posts += 1;
        s.last_headers = Some(headers.clone());
        if let Err(r) = authenticate(&s, &headers) {
            return r;
        }
        if !s.scopes.iter().any(|x| x == "mail.send") {
            return errors(403, &[("access forbidden", None)]);
        }
        let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
            return errors(400, &[("Bad Request", None)]);
        };
        if let Err(r) = validate(&payload) {
            return r;
        }
        let inject = s.inject.pop_front().or_else(|| s.always.clone());
        match &inject {
            Some(Inject::Raw(status, body, extra)) => {
                let mut r = (
                    StatusCode::from_u16(*status).unwrap(),
                    [("content-type", "application/json")],
                    body.clone(),
                )
                    .into_response();
                for (k, v) in extra {
                    r.headers_mut().insert(*k, v.parse().unwrap());
                }
                return r;
            }
            Some(Inject::RateLimited(ahead)) => {
                let reset = jiff::Timestamp::now().as_second() + ahead;
                let mut r = errors(429, &[("too many requests", None)]);
                for (k, v) in [
                    ("x-ratelimit-limit", "600".to_string()),
                    ("x-ratelimit-remaining", "0".into()),
                    ("x-ratelimit-reset", reset.to_string()),
                ] {
                    r.headers_mut().insert(k, v.parse().unwrap());
                }
                return r;
            }
            _ => {}
        }
        if payload["mail_settings"]["sandbox_mode"]["enable"] == json!(true) {
            return (StatusCode::OK, "").into_response();
        }
        s.sent.push(payload);
        (inject, s.sent.len())
    };
    let accepted = || (StatusCode::ACCEPTED, [("x-message-id", message_id(n))]).into_response();
    match inject {
        Some(Inject::AcceptThenFail) => errors(500, &[("internal error", None)]),
        Some(Inject::Stall(d)) => {
            tokio::time::sleep(d).await;
            accepted()
        }
        _ => accepted(),
    }
}

/// The `X-Message-Id` of the `n`th message taken (from 1).
fn message_id(n: usize) -> String {
    format!("14c5d75ce93.dfd.64b469.filter-{n:04}")
}

async fn scopes(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap) -> Response {
    let s = inner.lock().unwrap();
    if let Err(r) = authenticate(&s, &headers) {
        return r;
    }
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        json!({"scopes": s.scopes}).to_string(),
    )
        .into_response()
}
