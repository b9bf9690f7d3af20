//! OAuth2 for SMTP (`AUTH XOAUTH2`): access tokens from the client-credentials grant, as
//! Microsoft 365 and Google Workspace want them for app-only SMTP.
//!
//! The token endpoint is called over the shared HTTP client, so the same TLS verification and
//! time limits apply as to the HTTP providers. A token is cached until shortly before it
//! expires and dropped after the SMTP server refuses it. Tokens and the client secret never
//! appear in messages: the provider's redactor knows the secret, and every token is added to
//! its learned secrets (with the XOAUTH2 string it travels in) before it is used.

use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::provider::error::chain;
use crate::provider::http::describe_body;
use crate::provider::secret::LearnedSecrets;
use crate::provider::{SecretValue, SendError};

/// Tokens are renewed this long before they expire (or at half their lifetime, if shorter).
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);

/// Where tokens come from.
pub(crate) struct TokenSource {
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    client_secret: SecretValue,
    scope: Option<String>,
    cache: tokio::sync::Mutex<Option<Cached>>,
    learned: LearnedSecrets,
}

struct Cached {
    token: SecretValue,
    renew_at: Instant,
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize, Default)]
struct TokenError {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

impl TokenSource {
    pub(crate) fn new(
        http: reqwest::Client,
        token_url: String,
        client_id: String,
        client_secret: SecretValue,
        scope: Option<String>,
        learned: LearnedSecrets,
    ) -> Self {
        TokenSource {
            http,
            token_url,
            client_id,
            client_secret,
            scope,
            cache: tokio::sync::Mutex::new(None),
            learned,
        }
    }

    /// A token that is not about to expire: the cached one, or a new one.
    pub(crate) async fn token(&self, user: &str) -> Result<SecretValue, SendError> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref()
            && Instant::now() < c.renew_at
        {
            return Ok(c.token.clone());
        }
        let (token, lifetime) = self.fetch().await?;
        self.learned.learn(token.expose());
        self.learned.learn(&format!(
            "user={user}\x01auth=Bearer {}\x01\x01",
            token.expose()
        ));
        let margin = REFRESH_BEFORE_EXPIRY.min(lifetime / 2);
        *cache = Some(Cached {
            token: token.clone(),
            renew_at: Instant::now() + lifetime.saturating_sub(margin),
        });
        Ok(token)
    }

    /// Drops the cached token (the server refused it); returns whether there was one.
    pub(crate) async fn invalidate(&self) -> bool {
        self.cache.lock().await.take().is_some()
    }

    async fn fetch(&self) -> Result<(SecretValue, Duration), SendError> {
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose()),
        ];
        if let Some(scope) = &self.scope {
            form.push(("scope", scope.as_str()));
        }
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", form_escape(v)))
            .collect::<Vec<_>>()
            .join("&");
        let url = &self.token_url;
        let reply = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                SendError::transient(format!(
                    "could not get an OAuth2 token from {url}: {}; nothing was sent",
                    chain(&e)
                ))
            })?;
        let status = reply.status().as_u16();
        let text = reply.text().await.unwrap_or_default();
        if !(200..300).contains(&status) {
            let e: TokenError = serde_json::from_str(&text).unwrap_or_default();
            let said = match (e.error, e.error_description) {
                (Some(code), Some(desc)) => format!("{code}: {desc}"),
                (Some(code), None) => code,
                _ => describe_body(&text),
            };
            let message = format!("the OAuth2 token endpoint {url} answered {status}: {said}");
            return Err(match status {
                429 | 500..=599 => SendError::transient(format!("{message}; nothing was sent")),
                _ => SendError::permanent(format!(
                    "{message}; check spec.smtp.oauth2 (tokenUrl, clientId, scope) and the client secret in spec.smtp.oauth2.clientSecretSecretRef"
                ))
                .with_auth(),
            }
            .with_status(status));
        }
        let t: TokenReply = serde_json::from_str(&text).map_err(|e| {
            SendError::transient(format!(
                "the OAuth2 token endpoint {url} answered something else than a token ({e})"
            ))
        })?;
        if t.token_type
            .as_deref()
            .is_some_and(|k| !k.eq_ignore_ascii_case("bearer"))
        {
            return Err(SendError::permanent(format!(
                "the OAuth2 token endpoint {url} issued a `{}` token; XOAUTH2 needs a Bearer token",
                t.token_type.unwrap_or_default()
            ))
            .with_auth());
        }
        // Without expires_in, assume the common hour and renew early.
        let lifetime = Duration::from_secs(t.expires_in.unwrap_or(3600));
        Ok((SecretValue::new(t.access_token), lifetime))
    }
}

/// `application/x-www-form-urlencoded` escaping.
fn form_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
