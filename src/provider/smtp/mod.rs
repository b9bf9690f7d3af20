//! SMTP through lettre's connection API: StartTLS (required, never a plaintext fallback),
//! implicit TLS, or none; optional AUTH; a small pool of open connections per provider.
//!
//! Why not lettre's pooled `AsyncSmtpTransport`: its async transport has no read timeout
//! (the timeout covers only the TCP connect), and a send cancelled by an outer timeout
//! puts its half-used connection back into the pool, where the next send would continue
//! someone else's DATA. Driving the conversation step by step gives each step a limit,
//! tells "nothing handed over" (Transient) from "timed out after the body" (Ambiguous),
//! and pools only connections that finished a transaction cleanly.

use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials as LettreCredentials;
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};

use crate::api::ProviderKind;
use crate::api::sender_config::{SmtpSpec, SmtpTls};
use crate::message::OutgoingMessage;
use crate::provider::{ConfigError, HealthReport, Provider, SecretValue, SendError, SendReceipt};

mod endpoint;
mod failure;
mod greeting;
mod helo;
mod hide;
mod mime;
pub(crate) mod oauth2;
mod pool;
mod session;

use endpoint::{Auth, Endpoint};
use pool::Pool;

/// The RFC 5322 message exactly as SMTP hands it over (Bcc in the envelope only), for
/// `kmailops render --format eml`.
pub fn rfc5322(msg: &OutgoingMessage) -> Result<Vec<u8>, SendError> {
    Ok(mime::build(msg)?.formatted())
}

/// The name sent in EHLO when `spec.smtp.heloName` is unset: this host's fully qualified
/// name where one is known, else its bare host name.
pub fn local_helo_name() -> &'static str {
    helo::local_name()
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
    /// How long a server on port 465 may stay silent before a StartTLS or plaintext client
    /// takes the port for implicit TLS (other ports get `command`: see `greeting.rs`).
    pub greeting: Duration,
    /// How long a pooled connection may sit unused before it is closed with QUIT. Well under
    /// the idle limits of servers (RFC 5321 suggests 5 minutes; busy relays drop idle clients
    /// much sooner), and short, so open connections do not count against a per-client
    /// connection limit for long.
    pub idle: Duration,
}

impl Default for SmtpTimeouts {
    fn default() -> Self {
        SmtpTimeouts {
            connect: Duration::from_secs(10),
            command: Duration::from_secs(30),
            data: Duration::from_secs(120),
            greeting: Duration::from_secs(5),
            idle: Duration::from_secs(15),
        }
    }
}

/// An SMTP server account.
pub struct Smtp {
    endpoint: Endpoint,
    /// The sender's address: the health check's `MAIL FROM`.
    from: lettre::Address,
    timeouts: SmtpTimeouts,
    pool: Pool,
}

impl Smtp {
    /// Validates the spec and prepares TLS once (trust roots, caBundle).
    /// `from` is the sender's address (`spec.sender.address`).
    pub fn new(
        spec: &SmtpSpec,
        from: &str,
        password: Option<SecretValue>,
        timeouts: SmtpTimeouts,
    ) -> Result<Self, ConfigError> {
        Self::with_auth(spec, from, password, None, timeouts)
    }

    /// [`Smtp::new`] that authenticates with AUTH XOAUTH2 and tokens from `tokens`.
    pub(crate) fn with_oauth2(
        spec: &SmtpSpec,
        from: &str,
        tokens: oauth2::TokenSource,
        timeouts: SmtpTimeouts,
    ) -> Result<Self, ConfigError> {
        Self::with_auth(spec, from, None, Some(tokens), timeouts)
    }

    fn with_auth(
        spec: &SmtpSpec,
        from: &str,
        password: Option<SecretValue>,
        tokens: Option<oauth2::TokenSource>,
        timeouts: SmtpTimeouts,
    ) -> Result<Self, ConfigError> {
        let from = from.trim().parse::<lettre::Address>().map_err(|e| {
            ConfigError::new(
                "spec.sender.address",
                format!("`{from}` is not a valid address for SMTP: {e}"),
            )
        })?;
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
                hello: helo::client_id(spec.helo_name.as_deref())?,
            },
            from,
            pool: Pool::new(timeouts.idle, timeouts.command),
            timeouts,
        })
    }

    /// A pooled connection that still answers NOOP, else a new one.
    async fn connection(&self) -> Result<AsyncSmtpConnection, SendError> {
        while let Some(mut conn) = self.pool.take() {
            let alive = tokio::time::timeout(self.timeouts.command, conn.test_connected()).await;
            if matches!(alive, Ok(true)) {
                return Ok(conn);
            }
        }
        self.endpoint.open(self.timeouts).await.map_err(|f| f.error)
    }

    /// One message over a pooled or new connection.
    async fn deliver(&self, msg: &OutgoingMessage) -> Result<SendReceipt, SendError> {
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
        self.pool.give_back(conn).await;
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
        self.deliver(msg).await.map_err(|mut e| {
            let recipients = msg.to.iter().chain(&msg.cc).chain(&msg.bcc);
            e.message = hide::hide_recipients(&e.message, recipients.map(|m| m.address.as_str()));
            e
        })
    }

    async fn check_health(&self, timeout: Duration) -> HealthReport {
        // A fresh connection, not a pooled one: the check is about connect, TLS and AUTH,
        // and then whether the server would take mail from this sender at all: MAIL FROM
        // shows a server that requires AUTH from a sender without credentials (530), which
        // connecting alone does not. RSET ends the transaction; DATA is never sent.
        // Each step gets at most half the check's time, so a step's own message (with its
        // hint) wins over the check's overall timeout.
        let half = timeout / 2;
        let limits = SmtpTimeouts {
            connect: self.timeouts.connect.min(half),
            command: self.timeouts.command.min(half),
            greeting: self.timeouts.greeting.min(half),
            ..self.timeouts
        };
        let check = async {
            let mut conn = self.endpoint.open(limits).await?;
            let non_ascii = !AsRef::<str>::as_ref(&self.from).is_ascii();
            let probe = async {
                self.endpoint
                    .mail_from(
                        &mut conn,
                        Some(&self.from),
                        non_ascii,
                        false,
                        limits.command,
                    )
                    .await?;
                self.endpoint.reset(&mut conn, limits.command).await
            }
            .await;
            conn.abort().await;
            probe
        };
        let addr = format!("{}:{}", self.endpoint.host, self.endpoint.port);
        match tokio::time::timeout(timeout, check).await {
            Ok(Ok(())) => HealthReport::healthy(format!(
                "SMTP server {addr} accepted the connection{}{} and MAIL FROM:<{}>",
                if self.endpoint.implicit_tls.is_some() || self.endpoint.starttls.is_some() {
                    ", TLS"
                } else {
                    ""
                },
                match &self.endpoint.auth {
                    Some(Auth::OAuth2 { .. }) => ", AUTH XOAUTH2 with an OAuth2 token",
                    Some(Auth::Password(_)) => ", AUTH",
                    None => "",
                },
                self.from,
            )),
            Ok(Err(f)) => HealthReport::unhealthy(f.reason, f.error.message),
            Err(_) => HealthReport::unhealthy(
                crate::provider::reason::TIMEOUT,
                format!(
                    "SMTP server {addr} did not complete connect, TLS, AUTH, MAIL FROM and RSET within {timeout:?}"
                ),
            ),
        }
    }
}
