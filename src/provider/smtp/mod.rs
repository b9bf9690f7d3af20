//! SMTP through lettre's connection API: StartTLS (required, never a plaintext fallback),
//! implicit TLS, or none; optional AUTH; a small pool of open connections per provider.
//!
//! Why not lettre's pooled `AsyncSmtpTransport`: its async transport has no read timeout
//! (the timeout covers only the TCP connect), and a send cancelled by an outer timeout
//! puts its half-used connection back into the pool, where the next send would continue
//! someone else's DATA. Driving the conversation step by step gives each step a limit,
//! tells "nothing handed over" (Transient) from "timed out after the body" (Ambiguous),
//! and pools only connections that finished a transaction cleanly.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use lettre::transport::smtp::authentication::Credentials as LettreCredentials;
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;

use crate::api::ProviderKind;
use crate::api::sender_config::{SmtpSpec, SmtpTls};
use crate::message::OutgoingMessage;
use crate::provider::{ConfigError, HealthReport, Provider, SecretValue, SendError, SendReceipt};

mod mime;
pub(crate) mod oauth2;
mod session;

use session::{Auth, Endpoint, Step};

/// The RFC 5322 message exactly as SMTP hands it over (Bcc in the envelope only), for
/// `kmailops render --format eml`.
pub fn rfc5322(msg: &OutgoingMessage) -> Result<Vec<u8>, SendError> {
    Ok(mime::build(msg)?.formatted())
}

/// Time limits of one SMTP conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmtpTimeouts {
    /// TCP connect (and, for implicit TLS, the handshake).
    pub connect: Duration,
    /// Each command's reply: greeting, EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA.
    pub command: Duration,
    /// The reply to the message body. A timeout here is Ambiguous, so wait long: RFC 5321
    /// suggests servers may take minutes.
    pub data: Duration,
}

impl Default for SmtpTimeouts {
    fn default() -> Self {
        SmtpTimeouts {
            connect: Duration::from_secs(10),
            command: Duration::from_secs(30),
            data: Duration::from_secs(120),
        }
    }
}

/// Open connections kept for reuse.
const MAX_IDLE: usize = 4;
/// Servers drop idle clients after a few minutes; older connections are not worth a NOOP.
const MAX_IDLE_AGE: Duration = Duration::from_secs(60);

struct Idle {
    conn: AsyncSmtpConnection,
    since: Instant,
}

/// An SMTP server account.
pub struct Smtp {
    endpoint: Endpoint,
    timeouts: SmtpTimeouts,
    idle: Mutex<Vec<Idle>>,
}

impl Smtp {
    /// Validates the spec and prepares TLS once (trust roots, caBundle).
    pub fn new(
        spec: &SmtpSpec,
        password: Option<SecretValue>,
        timeouts: SmtpTimeouts,
    ) -> Result<Self, ConfigError> {
        Self::with_auth(spec, password, None, timeouts)
    }

    /// [`Smtp::new`] that authenticates with AUTH XOAUTH2 and tokens from `tokens`.
    pub(crate) fn with_oauth2(
        spec: &SmtpSpec,
        tokens: oauth2::TokenSource,
        timeouts: SmtpTimeouts,
    ) -> Result<Self, ConfigError> {
        Self::with_auth(spec, None, Some(tokens), timeouts)
    }

    fn with_auth(
        spec: &SmtpSpec,
        password: Option<SecretValue>,
        tokens: Option<oauth2::TokenSource>,
        timeouts: SmtpTimeouts,
    ) -> Result<Self, ConfigError> {
        let host = spec.host.trim().to_string();
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(ConfigError::new(
                "spec.smtp.host",
                format!("`{}` is not a host name or IP address", spec.host),
            ));
        }
        let auth = match (&spec.username, password, tokens) {
            (Some(user), None, Some(tokens)) => Some(Auth::OAuth2 {
                user: user.clone(),
                tokens: std::sync::Arc::new(tokens),
            }),
            (None, None, Some(_)) => {
                return Err(ConfigError::new(
                    "spec.smtp.username",
                    "smtp.oauth2 needs smtp.username: the mailbox to send as",
                ));
            }
            (Some(user), Some(pw), None) => Some(Auth::Password(LettreCredentials::new(
                user.clone(),
                pw.expose().to_string(),
            ))),
            (None, None, None) => None,
            _ => {
                return Err(ConfigError::new(
                    "spec.smtp.username",
                    "set username and passwordSecretRef together, or neither",
                ));
            }
        };
        let tls = match spec.tls {
            SmtpTls::None => None,
            SmtpTls::StartTls | SmtpTls::Tls => Some(tls_parameters(&host, spec)?),
        };
        let (implicit_tls, starttls) = match spec.tls {
            SmtpTls::Tls => (tls, None),
            SmtpTls::StartTls => (None, tls),
            SmtpTls::None => (None, None),
        };
        Ok(Smtp {
            endpoint: Endpoint {
                port: spec.effective_port(),
                host,
                implicit_tls,
                starttls,
                auth,
                hello: ClientId::default(),
            },
            timeouts,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// A pooled connection that still answers NOOP, else a new one.
    async fn connection(&self) -> Result<AsyncSmtpConnection, SendError> {
        while let Some(mut idle) = self.take_idle() {
            if idle.since.elapsed() > MAX_IDLE_AGE {
                continue;
            }
            let alive =
                tokio::time::timeout(self.timeouts.command, idle.conn.test_connected()).await;
            if matches!(alive, Ok(true)) {
                return Ok(idle.conn);
            }
        }
        self.endpoint
            .open(self.timeouts.connect, self.timeouts.command)
            .await
            .map_err(|f| f.error)
    }

    fn take_idle(&self) -> Option<Idle> {
        // A poisoned lock only means another send panicked mid-push; the list is still valid.
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.pop()
    }

    fn give_back(&self, conn: AsyncSmtpConnection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }
}

/// Trust roots: the system's plus `caBundle`; `insecureSkipVerify` turns checking off.
fn tls_parameters(host: &str, spec: &SmtpSpec) -> Result<TlsParameters, ConfigError> {
    let mut b = TlsParameters::builder(host.to_string());
    if let Some(pem) = spec.ca_bundle.as_deref().filter(|p| !p.trim().is_empty()) {
        let bad = |why: String| ConfigError::new("spec.smtp.caBundle", why);
        use rustls::pki_types::pem::PemObject;
        let count = rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("is not valid PEM: {e}")))?
            .len();
        if count == 0 {
            return Err(bad(
                "contains no certificate; paste the CA's PEM (-----BEGIN CERTIFICATE-----...)"
                    .into(),
            ));
        }
        let cert = Certificate::from_pem(pem.as_bytes())
            .map_err(|e| bad(format!("could not be read: {e}")))?;
        b = b.add_root_certificate(cert);
    }
    if spec.insecure_skip_verify {
        b = b
            .dangerous_accept_invalid_certs(true)
            .dangerous_accept_invalid_hostnames(true);
    }
    b.build_rustls().map_err(|e| {
        ConfigError::new(
            "spec.smtp",
            format!(
                "could not set up TLS: {}",
                crate::provider::error::chain(&e)
            ),
        )
    })
}

#[async_trait::async_trait]
impl Provider for Smtp {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Smtp
    }

    async fn send(&self, msg: &OutgoingMessage) -> Result<SendReceipt, SendError> {
        let message = mime::build(msg)?;
        let body = message.formatted();
        let mut conn = self.connection().await?;
        // On any error the connection is dropped, never pooled: its state is unknown.
        let accepted = self
            .endpoint
            .transfer(
                &mut conn,
                message.envelope(),
                &body,
                self.timeouts.command,
                self.timeouts.data,
            )
            .await
            .map_err(|f| f.error)?;
        self.give_back(conn);
        let mut warnings = Vec::new();
        if !msg.tags.is_empty() {
            warnings.push("SMTP has no tags; spec.tags were not sent".to_string());
        }
        tracing::debug!(server_reply = %accepted, "SMTP server accepted the message");
        Ok(SendReceipt {
            message_id: msg.message_id.clone(),
            warnings,
        })
    }

    async fn check_health(&self, timeout: Duration) -> HealthReport {
        // A fresh connection, not a pooled one: the check is about connect, TLS and AUTH.
        let connect = self.timeouts.connect.min(timeout);
        let command = self.timeouts.command.min(timeout);
        let check = async {
            let mut conn = self.endpoint.open(connect, command).await?;
            let noop =
                async { Ok::<_, lettre::transport::smtp::Error>(conn.test_connected().await) };
            let alive = self.endpoint.step(Step::Noop, command, noop).await?;
            conn.abort().await;
            Ok::<bool, session::Failure>(alive)
        };
        let addr = format!("{}:{}", self.endpoint.host, self.endpoint.port);
        match tokio::time::timeout(timeout, check).await {
            Ok(Ok(true)) => HealthReport::healthy(format!(
                "SMTP server {addr} accepted the connection{}{}",
                if self.endpoint.implicit_tls.is_some() || self.endpoint.starttls.is_some() {
                    ", TLS"
                } else {
                    ""
                },
                match &self.endpoint.auth {
                    Some(Auth::OAuth2 { .. }) => " and AUTH XOAUTH2 with an OAuth2 token",
                    Some(Auth::Password(_)) => " and AUTH",
                    None => "",
                },
            )),
            Ok(Ok(false)) => HealthReport::unhealthy(
                crate::provider::reason::PROVIDER_ERROR,
                format!("SMTP server {addr} did not answer NOOP"),
            ),
            Ok(Err(f)) => HealthReport::unhealthy(f.reason, f.error.message),
            Err(_) => HealthReport::unhealthy(
                crate::provider::reason::TIMEOUT,
                format!(
                    "SMTP server {addr} did not complete connect, TLS, AUTH and NOOP within {timeout:?}"
                ),
            ),
        }
    }
}
