//! For SMTP with OAuth2: a token endpoint that implements the client-credentials grant as
//! Microsoft identity platform documents it (form POST, `invalid_client` / `invalid_scope`
//! errors as JSON, `{"access_token","token_type","expires_in"}`), and the real SMTP server of
//! tests/smtp_server.py started with `--xoauth2-token-file`, which accepts exactly the tokens
//! the endpoint issued and not revoked.
#![allow(dead_code, clippy::result_large_err)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

use crate::common::smtp_server::Pki;

pub const CLIENT_ID: &str = "0f4c6a3e-7d1b-4e55-9c2a-kmailops-test";
pub const SCOPE: &str = "https://outlook.office365.com/.default";

struct Inner {
    client_secret: String,
    token_file: PathBuf,
    issued: Vec<String>,
    revoked: Vec<String>,
    requests: usize,
    expires_in: u64,
    /// Answer the next requests with this status and error code instead.
    fail: Option<(u16, &'static str)>,
    echo_secret: bool,
}

/// The token endpoint; its URL is `url`.
#[derive(Clone)]
pub struct TokenServer {
    pub url: String,
    pub token_file: PathBuf,
    inner: Arc<Mutex<Inner>>,
    _dir: Arc<tempfile::TempDir>,
}

impl TokenServer {
    pub async fn start(client_secret: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let token_file = dir.path().join("valid-tokens");
        std::fs::write(&token_file, "").expect("token file");
        let inner = Arc::new(Mutex::new(Inner {
            client_secret: client_secret.to_string(),
            token_file: token_file.clone(),
            issued: vec![],
            revoked: vec![],
            requests: 0,
            expires_in: 3599,
            fail: None,
            echo_secret: false,
        }));
        let app = Router::new()
            .route("/tenant/oauth2/v2.0/token", post(token))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the token server");
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TokenServer {
            url: format!("http://{addr}/tenant/oauth2/v2.0/token"),
            token_file,
            inner,
            _dir: Arc::new(dir),
        }
    }

    pub fn requests(&self) -> usize {
        self.inner.lock().unwrap().requests
    }

    pub fn issued(&self) -> Vec<String> {
        self.inner.lock().unwrap().issued.clone()
    }

    /// The SMTP server stops accepting every token issued so far (as after a password reset
    /// of the app, or a token revoked early).
    pub fn revoke_all(&self) {
        let mut s = self.inner.lock().unwrap();
        let issued = s.issued.clone();
        s.revoked.extend(issued);
        write_valid(&s);
    }

    pub fn set_expires_in(&self, seconds: u64) {
        self.inner.lock().unwrap().expires_in = seconds;
    }

    pub fn fail_with(&self, status: u16, code: &'static str) {
        self.inner.lock().unwrap().fail = Some((status, code));
    }

    /// Error answers quote the client secret they got (real endpoints do not).
    pub fn echo_secret(&self) {
        self.inner.lock().unwrap().echo_secret = true;
    }
}

fn write_valid(s: &Inner) {
    let valid: Vec<&String> = s.issued.iter().filter(|t| !s.revoked.contains(t)).collect();
    let text: String = valid.iter().map(|t| format!("{t}\n")).collect();
    std::fs::write(&s.token_file, text).expect("write valid tokens");
}

fn error(status: u16, code: &str, description: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        json!({"error": code, "error_description": description, "error_codes": [7000215]})
            .to_string(),
    )
        .into_response()
}

async fn token(State(inner): State<Arc<Mutex<Inner>>>, body: Bytes) -> Response {
    let mut s = inner.lock().unwrap();
    s.requests += 1;
    let form: std::collections::HashMap<String, String> =
        reqwest::Url::parse(&format!("http://x/?{}", String::from_utf8_lossy(&body)))
            .map(|u| u.query_pairs().into_owned().collect())
            .unwrap_or_default();
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    if let Some((status, code)) = s.fail {
        let echo = if s.echo_secret {
            format!(" (got {})", get("client_secret"))
        } else {
            String::new()
        };
        return error(
            status,
            code,
            &format!("AADSTS7000215: Invalid client secret provided.{echo}"),
        );
    }
    if get("grant_type") != "client_credentials" {
        return error(
            400,
            "unsupported_grant_type",
            "AADSTS70003: The app requested an unsupported grant type.",
        );
    }
    if get("client_id") != CLIENT_ID {
        return error(
            400,
            "unauthorized_client",
            "AADSTS700016: Application not found in the directory.",
        );
    }
    if get("client_secret") != s.client_secret {
        let echo = if s.echo_secret {
            format!(" (got {})", get("client_secret"))
        } else {
            String::new()
        };
        return error(
            401,
            "invalid_client",
            &format!("AADSTS7000215: Invalid client secret provided.{echo}"),
        );
    }
    if get("scope") != SCOPE {
        return error(
            400,
            "invalid_scope",
            "AADSTS70011: The provided value for the input parameter 'scope' is not valid.",
        );
    }
    let token = format!(
        "eyJ0eXAiOiJKV1QiLCJub25jZSI6Im{:04}.access-token-distinctive",
        s.issued.len() + 1
    );
    s.issued.push(token.clone());
    write_valid(&s);
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        json!({"token_type": "Bearer", "expires_in": s.expires_in, "ext_expires_in": s.expires_in, "access_token": token}).to_string(),
    )
        .into_response()
}

/// tests/smtp_server.py with STARTTLS, the user `mailbox`, and XOAUTH2 checked against the
/// token server's valid tokens.
pub struct OAuthSmtpServer {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl OAuthSmtpServer {
    pub fn start(pki: &Pki, mailbox: &str, tokens: &TokenServer) -> Self {
        Self::start_with(pki, mailbox, tokens, "exchange")
    }

    /// `refusal`: `exchange` (a plain 535) or `google` (a 334 challenge with a JSON error).
    pub fn start_with(pki: &Pki, mailbox: &str, tokens: &TokenServer, refusal: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port_file = dir.path().join("port");
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp_server.py");
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr file");
        let mut child = Command::new("python3")
            .arg(&script)
            .args(["--mode", "starttls", "--user", mailbox])
            .arg("--cert")
            .arg(&pki.cert)
            .arg("--key")
            .arg(&pki.key)
            .arg("--dir")
            .arg(dir.path())
            .arg("--port-file")
            .arg(&port_file)
            .arg("--xoauth2-token-file")
            .arg(&tokens.token_file)
            .args(["--xoauth2-refusal", refusal])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start python3 tests/smtp_server.py");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(text) = std::fs::read_to_string(&port_file)
                && let Ok(port) = text.trim().parse::<u16>()
            {
                return OAuthSmtpServer { child, port, dir };
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log =
                    std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
                panic!("the SMTP test server exited ({status}) before listening:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "the SMTP test server did not start within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn events(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("events.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn messages(&self) -> Vec<serde_json::Value> {
        (1..)
            .map(|n| self.dir.path().join(format!("{n}.json")))
            .take_while(|p| p.exists())
            .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect()
    }
}

impl Drop for OAuthSmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
