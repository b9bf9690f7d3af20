//! A local server that behaves as Amazon SES v2 documents, and checks every request's SigV4
//! signature for real: it recomputes the signature from the request it received and the
//! secret key it knows (its own implementation, not the aws-sigv4 crate), so a broken signer
//! fails. Wrong signatures get 403 `InvalidSignatureException`, unknown key IDs 403
//! `UnrecognizedClientException`, stale dates 403 `InvalidSignatureException` (signature
//! expired), all with `x-amzn-ErrorType` and a JSON `message`.
//!
//! Also serves, for the default credential chain: STS `AssumeRoleWithWebIdentity` on `POST /`
//! (checks the web identity token, answers XML), and a container credentials endpoint on
//! `GET /container-credentials` (checks the authorization token).
#![allow(dead_code, clippy::result_large_err)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const REGION: &str = "eu-west-1";

#[derive(Clone, Debug)]
pub enum Inject {
    /// Refuse with this status, x-amzn-ErrorType and message; nothing sent.
    Error(u16, &'static str, String),
    /// Send, then answer 500 InternalFailure.
    AcceptThenFail,
    /// Answer only after this long.
    Stall(Duration),
}

#[derive(Clone)]
struct Key {
    secret: String,
    session_token: Option<String>,
}

#[derive(Default)]
struct Inner {
    keys: HashMap<String, Key>,
    inject: VecDeque<Inject>,
    sent: Vec<Value>,
    posts: usize,
    signed_headers: Vec<String>,
    account: Value,
    /// web identity token -> the temporary key handed out for it
    web_identity: Option<(String, String)>,
    /// container authorization token -> the temporary key handed out for it
    container: Option<(String, String)>,
    credential_fetches: usize,
}

#[derive(Clone)]
pub struct MockSes {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

fn aws_error(status: u16, kind: &str, message: &str) -> Response {
    let mut r = (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        json!({ "message": message }).to_string(),
    )
        .into_response();
    r.headers_mut().insert(
        "x-amzn-errortype",
        format!("{kind}:http://internal.amazon.com/coral/com.amazonaws.sesv2/")
            .parse()
            .unwrap(),
    );
    r
}

impl MockSes {
    /// A server that knows the long-term key `access_key_id` / `secret`.
    pub async fn start(access_key_id: &str, secret: &str) -> Self {
        let mut keys = HashMap::new();
        keys.insert(
            access_key_id.to_string(),
            Key {
                secret: secret.to_string(),
                session_token: None,
            },
        );
        let inner = Arc::new(Mutex::new(Inner {
            keys,
            account: json!({
                "DedicatedIpAutoWarmupEnabled": false,
                "EnforcementStatus": "HEALTHY",
                "ProductionAccessEnabled": true,
                "SendQuota": {"Max24HourSend": 50000.0, "MaxSendRate": 14.0, "SentLast24Hours": 12.0},
                "SendingEnabled": true
            }),
            ..Inner::default()
        }));
        let app = Router::new()
            .route("/v2/email/outbound-emails", post(send))
            .route("/v2/email/account", get(account))
            .route("/", post(sts))
            .route("/container-credentials", get(container))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the mock SES server");
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockSes {
            url: format!("http://{addr}"),
            inner,
        }
    }

    /// STS hands out the temporary key `(id, secret, token)` for `web_token`.
    pub fn allow_web_identity(&self, web_token: &str, id: &str, secret: &str, session: &str) {
        let mut s = self.inner.lock().unwrap();
        s.keys.insert(
            id.into(),
            Key {
                secret: secret.into(),
                session_token: Some(session.into()),
            },
        );
        s.web_identity = Some((web_token.into(), id.into()));
    }

    /// The container endpoint hands out the temporary key for `auth_token`.
    pub fn allow_container(&self, auth_token: &str, id: &str, secret: &str, session: &str) {
        let mut s = self.inner.lock().unwrap();
        s.keys.insert(
            id.into(),
            Key {
                secret: secret.into(),
                session_token: Some(session.into()),
            },
        );
        s.container = Some((auth_token.into(), id.into()));
    }

    pub fn set_account(&self, account: Value) {
        self.inner.lock().unwrap().account = account;
    }

    pub fn inject(&self, what: Inject) {
        self.inner.lock().unwrap().inject.push_back(what);
    }

    pub fn sent(&self) -> Vec<Value> {
        self.inner.lock().unwrap().sent.clone()
    }

    pub fn posts(&self) -> usize {
        self.inner.lock().unwrap().posts
    }

    /// The SignedHeaders of the last signed request.
    pub fn signed_headers(&self) -> Vec<String> {
        self.inner.lock().unwrap().signed_headers.clone()
    }

    pub fn credential_fetches(&self) -> usize {
        self.inner.lock().unwrap().credential_fetches
    }
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut m = HmacSha256::new_from_slice(key).expect("hmac key");
    m.update(data.as_bytes());
    m.finalize().into_bytes().to_vec()
}

fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Verifies the SigV4 signature of a request as AWS does. Returns the access key ID.
fn verify(
    inner: &mut Inner,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<String, Response> {
    let deny = |kind: &str, msg: &str| Err(aws_error(403, kind, msg));
    let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return deny(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        );
    };
    let Some(rest) = auth.strip_prefix("AWS4-HMAC-SHA256 ") else {
        return deny(
            "IncompleteSignatureException",
            "Unsupported signing algorithm",
        );
    };
    let mut credential = "";
    let mut signed = "";
    let mut signature = "";
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = v;
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = v;
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = v;
        }
    }
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5 || scope[4] != "aws4_request" {
        return deny(
            "IncompleteSignatureException",
            "Credential must have exactly 5 slash-delimited elements",
        );
    }
    let (key_id, date, region, service) = (scope[0], scope[1], scope[2], scope[3]);
    let Some(key) = inner.keys.get(key_id).cloned() else {
        return deny(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        );
    };
    if region != REGION || service != "ses" {
        return deny(
            "InvalidSignatureException",
            &format!(
                "Credential should be scoped to a valid region and service: got {region}/{service}"
            ),
        );
    }
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if !amz_date.starts_with(date) || amz_date.len() != 16 {
        return deny(
            "InvalidSignatureException",
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP",
        );
    }
    let when = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", &amz_date)
        .ok()
        .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| z.timestamp());
    let skew = when.map(|w| (jiff::Timestamp::now().as_second() - w.as_second()).abs());
    if skew.is_none_or(|s| s > 300) {
        return deny(
            "InvalidSignatureException",
            "Signature expired: the request time is too far from the server time",
        );
    }
    let signed_list: Vec<String> = signed.split(';').map(str::to_string).collect();
    if !signed_list.iter().any(|h| h == "host") || !signed_list.iter().any(|h| h == "x-amz-date") {
        return deny(
            "InvalidSignatureException",
            "host and x-amz-date must be signed",
        );
    }
    if let Some(expected) = &key.session_token {
        let got = headers
            .get("x-amz-security-token")
            .and_then(|v| v.to_str().ok());
        if got != Some(expected.as_str())
            || !signed_list.iter().any(|h| h == "x-amz-security-token")
        {
            return deny(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            );
        }
    }
    inner.signed_headers = signed_list.clone();
    let canonical_headers: String = signed_list
        .iter()
        .map(|h| {
            let v = headers
                .get(h.as_str())
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            format!(
                "{h}:{}\n",
                v.split_whitespace().collect::<Vec<_>>().join(" ")
            )
        })
        .collect();
    let mut query: Vec<(String, String)> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    query.sort();
    let canonical_query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let canonical_request = format!(
        "{method}\n{}\n{canonical_query}\n{canonical_headers}\n{signed}\n{}",
        uri_encode(uri.path(), true),
        hex::encode(Sha256::digest(body))
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{date}/{region}/{service}/aws4_request\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let k_date = hmac(format!("AWS4{}", key.secret).as_bytes(), date);
    let k_region = hmac(&k_date, region);
    let k_service = hmac(&k_region, service);
    let k_signing = hmac(&k_service, "aws4_request");
    let expected = hex::encode(hmac(&k_signing, &string_to_sign));
    if expected != signature {
        return deny(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
        );
    }
    Ok(key_id.to_string())
}

fn valid_tag(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

async fn send(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let inject = {
        let mut s = inner.lock().unwrap();
        s.posts += 1;
        if let Err(r) = verify(&mut s, &method, &uri, &headers, &body) {
            return r;
        }
        let Ok(p) = serde_json::from_slice::<Value>(&body) else {
            return aws_error(
                400,
                "BadRequestException",
                "Could not parse the request body as JSON.",
            );
        };
        if p["FromEmailAddress"].as_str().is_none() {
            return aws_error(
                400,
                "BadRequestException",
                "Missing required parameter FromEmailAddress",
            );
        }
        let count: usize = ["ToAddresses", "CcAddresses", "BccAddresses"]
            .iter()
            .map(|f| p["Destination"][*f].as_array().map_or(0, Vec::len))
            .sum();
        if count == 0 {
            return aws_error(400, "BadRequestException", "Missing required header 'To'.");
        }
        if count > 50 {
            return aws_error(400, "MessageRejected", "Recipient count exceeds 50.");
        }
        if p["Content"]["Simple"]["Subject"]["Data"].as_str().is_none() {
            return aws_error(
                400,
                "BadRequestException",
                "Missing required parameter Content.Simple.Subject",
            );
        }
        if let Some(tags) = p["EmailTags"].as_array()
            && !tags.iter().all(|t| {
                t["Name"].as_str().is_some_and(valid_tag)
                    && t["Value"].as_str().is_some_and(valid_tag)
            })
        {
            return aws_error(
                400,
                "BadRequestException",
                "Illegal tag name or value: tag names and values may only contain ASCII letters, numbers, underscores and dashes.",
            );
        }
        let inject = s.inject.pop_front();
        if let Some(Inject::Error(status, kind, message)) = &inject {
            return aws_error(*status, kind, message);
        }
        s.sent.push(p);
        inject
    };
    let n = inner.lock().unwrap().sent.len();
    let ok = || {
        (StatusCode::OK, [("content-type", "application/json")], json!({"MessageId": format!("0102019abcde{n:04}-11112222-3333-4444-5555-666677778888-000000")}).to_string()).into_response()
    };
    match inject {
        Some(Inject::AcceptThenFail) => aws_error(
            500,
            "InternalFailure",
            "The request processing has failed because of an unknown error, exception or failure.",
        ),
        Some(Inject::Stall(d)) => {
            tokio::time::sleep(d).await;
            ok()
        }
        _ => ok(),
    }
}

async fn account(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = inner.lock().unwrap();
    if let Err(r) = verify(&mut s, &method, &uri, &headers, &body) {
        return r;
    }
    if let Some(Inject::Error(status, kind, message)) = s.inject.front().cloned() {
        s.inject.pop_front();
        return aws_error(status, kind, &message);
    }
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        s.account.to_string(),
    )
        .into_response()
}

fn form(body: &[u8]) -> HashMap<String, String> {
    reqwest::Url::parse(&format!("http://x/?{}", String::from_utf8_lossy(body)))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

async fn sts(State(inner): State<Arc<Mutex<Inner>>>, body: Bytes) -> Response {
    let mut s = inner.lock().unwrap();
    s.credential_fetches += 1;
    let f = form(&body);
    let xml_error = |code: &str, msg: &str| {
        (StatusCode::BAD_REQUEST, [("content-type", "text/xml")], format!("<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{msg}</Message></Error><RequestId>r-1</RequestId></ErrorResponse>")).into_response()
    };
    if f.get("Action").map(String::as_str) != Some("AssumeRoleWithWebIdentity")
        || f.get("Version").map(String::as_str) != Some("2011-06-15")
    {
        return xml_error("InvalidAction", "Could not find operation");
    }
    if f.get("RoleArn")
        .is_none_or(|r| !r.starts_with("arn:aws:iam::"))
        || !f.contains_key("RoleSessionName")
    {
        return xml_error(
            "ValidationError",
            "RoleArn and RoleSessionName are required",
        );
    }
    let Some((token, id)) = s.web_identity.clone() else {
        return xml_error(
            "AccessDenied",
            "Not authorized to perform sts:AssumeRoleWithWebIdentity",
        );
    };
    if f.get("WebIdentityToken") != Some(&token) {
        return xml_error(
            "InvalidIdentityToken",
            "Couldn't retrieve verification key from your identity provider",
        );
    }
    let key = s.keys[&id].clone();
    let expires = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    (StatusCode::OK, [("content-type", "text/xml")], format!(
        "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleWithWebIdentityResult><Audience>sts.amazonaws.com</Audience><AssumedRoleUser><AssumedRoleId>AROA:x</AssumedRoleId><Arn>{}</Arn></AssumedRoleUser><Provider>oidc</Provider><Credentials><SessionToken>{}</SessionToken><SecretAccessKey>{}</SecretAccessKey><Expiration>{}</Expiration><AccessKeyId>{id}</AccessKeyId></Credentials><SubjectFromWebIdentityToken>system:serviceaccount:kmailops:kmailops</SubjectFromWebIdentityToken></AssumeRoleWithWebIdentityResult><ResponseMetadata><RequestId>r-2</RequestId></ResponseMetadata></AssumeRoleWithWebIdentityResponse>",
        f["RoleArn"], key.session_token.unwrap_or_default().replace('&', "&amp;"), key.secret, expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    )).into_response()
}

async fn container(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap) -> Response {
    let mut s = inner.lock().unwrap();
    s.credential_fetches += 1;
    let Some((token, id)) = s.container.clone() else {
        return (StatusCode::NOT_FOUND, "no credentials").into_response();
    };
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(token.as_str()) {
        return (
            StatusCode::UNAUTHORIZED,
            [("content-type", "application/json")],
            json!({"Message": "invalid authorization token"}).to_string(),
        )
            .into_response();
    }
    let key = s.keys[&id].clone();
    let expires = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(6);
    (StatusCode::OK, [("content-type", "application/json")], json!({
        "AccessKeyId": id, "SecretAccessKey": key.secret, "Token": key.session_token,
        "AccountId": "123456789012", "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    }).to_string()).into_response()
}
