//! A local server that behaves as Postmark documents: `X-Postmark-Server-Token` (401 without
//! one, 422 `ErrorCode` 10 for a wrong one), `POST /email` with its validation (a JSON body,
//! at most 50 recipients, known message streams, suppressed recipients answered with
//! `ErrorCode` 406), the test token `POSTMARK_API_TEST` that validates without sending,
//! `GET /server`, and `GET /messages/outbound` filtered by metadata. Other failures are
//! injected per call.
#![allow(dead_code, clippy::result_large_err)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

pub const TEST_TOKEN: &str = "POSTMARK_API_TEST";

/// What the next `POST /email` does instead of a clean 200.
#[derive(Clone, Debug)]
pub enum Inject {
    /// Answer with this HTTP status and body, extra headers; nothing sent.
    Raw(u16, String, Vec<(&'static str, String)>),
    /// HTTP 422 with this ErrorCode and message; nothing sent.
    Code(i64, String),
    /// Send, then answer 500 (the answer got lost).
    AcceptThenFail,
    /// Answer only after this long (nothing sent before the answer).
    Stall(Duration),
    /// Send, then answer only after this long (a timeout after the hand-over).
    AcceptThenStall(Duration),
}

/// What the next `GET /messages/outbound` does instead of searching.
#[derive(Clone, Debug)]
pub enum SearchInject {
    /// Answer with this HTTP status and body.
    Raw(u16, String),
    /// Answer (searching) only after this long.
    Stall(Duration),
}

#[derive(Default)]
struct Inner {
    token: String,
    streams: Vec<String>,
    suppressed: Vec<String>,
    inject: VecDeque<Inject>,
    search_inject: VecDeque<SearchInject>,
    searches: usize,
    sent: Vec<Value>,
    posts: usize,
    last_headers: Option<HeaderMap>,
}

#[derive(Clone)]
pub struct MockPostmark {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

fn json_reply(status: u16, body: Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn code(code: i64, message: &str) -> Response {
    json_reply(422, json!({"ErrorCode": code, "Message": message}))
}

impl MockPostmark {
    /// A server whose token is `token`, with the streams `outbound` and `broadcast`.
    pub async fn start(token: &str) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            token: token.to_string(),
            streams: vec!["outbound".into(), "broadcast".into()],
            ..Inner::default()
        }));
        let app = Router::new()
            .route("/email", post(send))
            .route("/server", get(server))
            .route("/messages/outbound", get(search))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the mock Postmark server");
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockPostmark {
            url: format!("http://{addr}"),
            inner,
        }
    }

    pub fn suppress(&self, address: &str) {
        self.inner
            .lock()
            .unwrap()
            .suppressed
            .push(address.to_string());
    }

    pub fn inject(&self, what: Inject) {
        self.inner.lock().unwrap().inject.push_back(what);
    }

    pub fn inject_search(&self, what: SearchInject) {
        self.inner.lock().unwrap().search_inject.push_back(what);
    }

    /// Searches answered (failed ones included).
    pub fn searches(&self) -> usize {
        self.inner.lock().unwrap().searches
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

fn authenticate(inner: &Inner, headers: &HeaderMap) -> Result<bool, Response> {
    let Some(token) = headers
        .get("x-postmark-server-token")
        .and_then(|v| v.to_str().ok())
    else {
        return Err(json_reply(
            401,
            json!({"ErrorCode": 10, "Message": "No Account or Server API tokens were supplied in the HTTP headers. Please add a header for either X-Postmark-Server-Token or X-Postmark-Account-Token."}),
        ));
    };
    if token == TEST_TOKEN {
        return Ok(true);
    }
    if token != inner.token {
        // Postmark does not echo tokens; this one does, so the redaction test has something
        // to scrub.
        return Err(code(
            10,
            &format!(
                "The Server Token you provided in the X-Postmark-Server-Token request header was invalid ({token}). Please verify that you are using a valid token."
            ),
        ));
    }
    Ok(false)
}

fn addresses(v: &Value) -> Vec<String> {
    v.as_str()
        .unwrap_or_default()
        .split(',')
        .map(|a| {
            let a = a.trim();
            a.rsplit_once('<')
                .map(|(_, r)| r.trim_end_matches('>').to_string())
                .unwrap_or_else(|| a.to_string())
        })
        .filter(|a| !a.is_empty())
        .collect()
}

async fn send(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap, body: Bytes) -> Response {
    let inject = {
        let mut s = inner.lock().unwrap();
        s.posts += 1;
        s.last_headers = Some(headers.clone());
        let test = match authenticate(&s, &headers) {
            Ok(test) => test,
            Err(r) => return r,
        };
        if !headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("application/json"))
        {
            return code(
                409,
                "JSON Required: Please set the Content-Type header to application/json.",
            );
        }
        let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
            return code(402, "Invalid JSON: the request body could not be parsed.");
        };
        if payload.get("From").and_then(Value::as_str).is_none() {
            return code(300, "Invalid 'From' address: ''.");
        }
        let recipients: Vec<String> = ["To", "Cc", "Bcc"]
            .iter()
            .flat_map(|f| addresses(&payload[*f]))
            .collect();
        if recipients.is_empty() {
            return code(300, "Zero recipients specified");
        }
        if recipients.len() > 50 {
            return code(
                300,
                "Invalid 'To' address: exceeds the maximum of 50 recipients.",
            );
        }
        let stream = payload["MessageStream"].as_str().unwrap_or("outbound");
        if !s.streams.iter().any(|st| st == stream) {
            return code(
                1235,
                &format!("The message stream '{stream}' provided does not exist on this server."),
            );
        }
        if let Some(meta) = payload.get("Metadata").and_then(Value::as_object)
            && meta
                .iter()
                .any(|(k, v)| k.len() > 20 || v.as_str().is_none_or(|v| v.len() > 80))
        {
            return code(
                300,
                "Metadata: field names are at most 20 characters and values at most 80.",
            );
        }
        if let Some(who) = recipients.iter().find(|r| s.suppressed.contains(r)) {
            return code(
                406,
                &format!(
                    "You tried to send to recipient(s) that have been marked as inactive. Found inactive addresses: {who}. Inactive recipients are ones that have generated a hard bounce, a spam complaint, or a manual suppression."
                ),
            );
        }
        let inject = s.inject.pop_front();
        match &inject {
            Some(Inject::Raw(status, body, extra)) => {
                let mut r = (StatusCode::from_u16(*status).unwrap(), body.clone()).into_response();
                for (k, v) in extra {
                    r.headers_mut().insert(*k, v.parse().unwrap());
                }
                return r;
            }
            Some(Inject::Code(c, m)) => return code(*c, m),
            _ => {}
        }
        if test {
            return json_reply(
                200,
                json!({"To": payload["To"], "SubmittedAt": "2026-11-29T12:00:00Z", "MessageID": "00000000-0000-0000-0000-000000000000", "ErrorCode": 0, "Message": "Test job accepted"}),
            );
        }
        if !matches!(inject, Some(Inject::Stall(_))) {
            s.sent.push(payload.clone());
        }
        inject
    };
    let id = |n: usize| format!("b7bc2f4a-e38e-4336-af7d-e6c39{n:07}");
    match inject {
        Some(Inject::AcceptThenFail) => json_reply(
            500,
            json!({"ErrorCode": 500, "Message": "Internal server error"}),
        ),
        Some(Inject::Stall(d)) => {
            tokio::time::sleep(d).await;
            json_reply(
                200,
                json!({"MessageID": id(0), "ErrorCode": 0, "Message": "OK"}),
            )
        }
        Some(Inject::AcceptThenStall(d)) => {
            let n = inner.lock().unwrap().sent.len();
            tokio::time::sleep(d).await;
            json_reply(
                200,
                json!({"MessageID": id(n), "ErrorCode": 0, "Message": "OK"}),
            )
        }
        _ => {
            let n = inner.lock().unwrap().sent.len();
            json_reply(
                200,
                json!({"To": "", "SubmittedAt": "2026-11-29T12:00:00Z", "MessageID": id(n), "ErrorCode": 0, "Message": "OK"}),
            )
        }
    }
}

async fn server(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap) -> Response {
    let s = inner.lock().unwrap();
    if let Err(r) = authenticate(&s, &headers) {
        return r;
    }
    json_reply(
        200,
        json!({"ID": 1, "Name": "Production", "ApiTokens": ["redacted"], "Color": "red", "DeliveryType": "Live"}),
    )
}

async fn search(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap, uri: Uri) -> Response {
    let q: Vec<(String, String)> = reqwest::Url::parse(&format!("http://mock{uri}"))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default();
    let inject = {
        let mut s = inner.lock().unwrap();
        s.searches += 1;
        if let Err(r) = authenticate(&s, &headers) {
            return r;
        }
        s.search_inject.pop_front()
    };
    match inject {
        Some(SearchInject::Raw(status, body)) => {
            return (StatusCode::from_u16(status).unwrap(), body).into_response();
        }
        Some(SearchInject::Stall(d)) => tokio::time::sleep(d).await,
        None => {}
    }
    // Postmark requires both; count is 1-500.
    let param = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let count = param("count").and_then(|c| c.parse::<usize>().ok());
    if !count.is_some_and(|c| (1..=500).contains(&c)) || param("offset").is_none() {
        return code(
            300,
            "The 'count' (1-500) and 'offset' query parameters are required.",
        );
    }
    let s = inner.lock().unwrap();
    let filters: Vec<(String, String)> = q
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix("metadata_").map(|k| (k.to_string(), v)))
        .collect();
    let found: Vec<Value> = s
        .sent
        .iter()
        .enumerate()
        .filter(|(_, m)| filters.iter().all(|(k, v)| m["Metadata"][k].as_str() == Some(v)))
        .map(|(i, m)| json!({"MessageID": format!("b7bc2f4a-e38e-4336-af7d-e6c39{:07}", i + 1), "Metadata": m["Metadata"], "Status": "Sent"}))
        .collect();
    json_reply(200, json!({"TotalCount": found.len(), "Messages": found}))
}
