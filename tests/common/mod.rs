//! Helpers shared by the integration tests: a local HTTP server that records requests and
//! plays scripted answers, and sample messages.
#![allow(dead_code)]

pub mod smtp_server;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use kmailops::api::{EmailSenderConfigSpec, EmailSpec};
use kmailops::message::{AttachmentData, OutgoingMessage, RenderedContent, build_message};

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

/// A scripted answer.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Option<Duration>,
}

impl Answer {
    pub fn new(status: u16, body: &str) -> Self {
        Answer {
            status,
            headers: vec![],
            body: body.to_string(),
            delay: None,
        }
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
    pub fn delayed(mut self, d: Duration) -> Self {
        self.delay = Some(d);
        self
    }
}

type Script = dyn Fn(&Recorded) -> Answer + Send + Sync;

#[derive(Clone)]
struct Shared {
    seen: Arc<Mutex<Vec<Recorded>>>,
    script: Arc<Script>,
}

/// A running mock server on 127.0.0.1.
pub struct Mock {
    pub url: String,
    seen: Arc<Mutex<Vec<Recorded>>>,
}

impl Mock {
    pub fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().expect("lock").clone()
    }
    pub fn only_request(&self) -> Recorded {
        let all = self.requests();
        assert_eq!(all.len(), 1, "expected exactly one request, got {all:?}");
        all[0].clone()
    }
}

async fn handle(State(shared): State<Shared>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        headers: parts.headers,
        body,
    };
    let answer = (shared.script)(&recorded);
    shared.seen.lock().expect("lock").push(recorded);
    if let Some(d) = answer.delay {
        tokio::time::sleep(d).await;
    }
    let mut b = Response::builder().status(StatusCode::from_u16(answer.status).expect("status"));
    for (k, v) in &answer.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    b.body(Body::from(answer.body)).expect("response")
}

/// Starts a server that answers every request with `script(request)`.
pub async fn serve(script: impl Fn(&Recorded) -> Answer + Send + Sync + 'static) -> Mock {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let shared = Shared {
        seen: seen.clone(),
        script: Arc::new(script),
    };
    let app = axum::Router::new().fallback(handle).with_state(shared);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the mock server");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Mock {
        url: format!("http://{addr}"),
        seen,
    }
}

/// An address on which nothing listens.
pub fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}")
}

/// One part of a multipart/form-data body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormPart {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub value: Vec<u8>,
}

impl FormPart {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.value).into_owned()
    }
}

/// A small multipart/form-data parser, enough to check every part a provider sent.
pub fn multipart(req: &Recorded) -> Vec<FormPart> {
    let ct = req.header("content-type");
    let boundary = ct
        .split("boundary=")
        .nth(1)
        .expect("multipart boundary")
        .trim_matches('"')
        .to_string();
    let delimiter = format!("--{boundary}");
    let body = &req.body;
    let mut parts = Vec::new();
    let positions: Vec<usize> = find_all(body, delimiter.as_bytes());
    for w in positions.windows(2) {
        let chunk = &body[w[0] + delimiter.len()..w[1]];
        let chunk = chunk.strip_prefix(b"\r\n").unwrap_or(chunk);
        let chunk = chunk.strip_suffix(b"\r\n").unwrap_or(chunk);
        let split = find_all(chunk, b"\r\n\r\n")[0];
        let head = String::from_utf8_lossy(&chunk[..split]).into_owned();
        let value = chunk[split + 4..].to_vec();
        let mut part = FormPart {
            name: String::new(),
            filename: None,
            content_type: None,
            value,
        };
        for line in head.lines() {
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("content-disposition:") {
                part.name = param(line, "name").unwrap_or_default();
                part.filename = param(line, "filename");
            } else if lower.starts_with("content-type:") {
                part.content_type = Some(line["content-type:".len()..].trim().to_string());
            }
        }
        parts.push(part);
    }
    parts
}

fn param(line: &str, key: &str) -> Option<String> {
    let needle = format!(" {key}=\"");
    let start = line.find(&needle)? + needle.len();
    let end = line[start..].find('"')?;
    Some(line[start..start + end].to_string())
}

fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    (0..hay.len().saturating_sub(needle.len() - 1))
        .filter(|&i| &hay[i..i + needle.len()] == needle)
        .collect()
}

pub fn sender_spec(yaml: &str) -> EmailSenderConfigSpec {
    serde_yaml::from_str(yaml).expect("sender spec")
}

/// A message with every feature: names, cc, bcc, reply-to, both bodies, a header, tags and
/// an attachment.
pub fn full_message(sender: &EmailSenderConfigSpec) -> OutgoingMessage {
    let email: EmailSpec = serde_yaml::from_str(
        r#"
to: ["Jane Doe <jane@example.org>", bob@example.org]
cc: ['"Doe, Carol" <carol@example.org>']
bcc: [audit@example.org]
replyTo: Help Desk <help@example.com>
headers: {X-Campaign: spring}
tags: [welcome, onboarding, q2, extra]
text: x
"#,
    )
    .expect("email spec");
    build_message(
        &email,
        sender,
        "mail/primary",
        RenderedContent {
            subject: "Welcome, Jane".into(),
            text: Some("Hello Jane,\nwelcome aboard.".into()),
            html: Some("<p>Hello Jane, <b>welcome</b> aboard.</p>".into()),
        },
        vec![AttachmentData {
            filename: "report.pdf".into(),
            content_type: "application/pdf".into(),
            content: b"%PDF-1.4\x00\x01binary\xff".to_vec(),
        }],
    )
    .expect("valid message")
}
