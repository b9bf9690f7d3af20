//! One SMTP conversation, step by step, each step with its own time limit, so a failure
//! says whether the message had been handed over.

use std::time::Duration;

use lettre::Address;
use lettre::transport::smtp::Error as LettreError;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{Extension, MailBodyParameter, MailParameter};

use super::SmtpTimeouts;
use super::endpoint::{Auth, Endpoint, Step};
use super::failure::Failure;
use super::greeting::{self, FirstBytes};
use crate::provider::{SendError, reason};

impl Endpoint {
    /// Connects, upgrades (StartTLS is required when configured: a server that does not
    /// offer it gets nothing, least of all a password or a message) and authenticates.
    /// With OAuth2, a refused token is dropped and the whole connection is tried once more
    /// with a new one (a server may close the connection after a failed AUTH).
    pub(super) async fn open(&self, limits: SmtpTimeouts) -> Result<AsyncSmtpConnection, Failure> {
        match self.open_once(limits).await {
            Err(f) if f.reason == reason::AUTH_FAILED => match &self.auth {
                Some(Auth::OAuth2 { tokens, .. }) if tokens.invalidate().await => {
                    self.open_once(limits).await
                }
                _ => Err(f),
            },
            other => other,
        }
    }

    async fn open_once(&self, limits: SmtpTimeouts) -> Result<AsyncSmtpConnection, Failure> {
        let (connect_timeout, command_timeout) = (limits.connect, limits.command);
        let mut conn = match &self.implicit_tls {
            Some(tls) => {
                let connect = AsyncSmtpConnection::connect_tokio1(
                    (self.host.as_str(), self.port),
                    Some(connect_timeout),
                    &self.hello,
                    Some(tls.clone()),
                    None,
                );
                self.step(Step::Connect, connect_timeout + command_timeout, connect)
                    .await?
            }
            None => self.connect_plain(limits).await?,
        };
        if let Some(params) = &self.starttls {
            if !conn.can_starttls() {
                return Err(Failure::new(
                    SendError::permanent(format!(
                        "SMTP server {} does not offer STARTTLS, which spec.smtp.tls: StartTLS requires; nothing was sent in plaintext. Use tls: TLS for an implicit-TLS port (465), or fix the server",
                        self.addr()
                    )),
                    reason::STARTTLS_NOT_OFFERED,
                ));
            }
            let upgrade = conn.starttls(params.clone(), &self.hello);
            self.step(Step::StartTls, command_timeout, upgrade).await?;
        }
        match &self.auth {
            Some(Auth::Password(credentials)) => {
                let auth = conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials);
                self.step(Step::Auth, command_timeout, auth).await?;
            }
            Some(Auth::OAuth2 { user, tokens }) => {
                let token = match tokio::time::timeout(command_timeout, tokens.token(user)).await {
                    Ok(Ok(token)) => token,
                    Ok(Err(e)) => {
                        conn.abort().await;
                        let reason = if e.auth {
                            reason::AUTH_FAILED
                        } else {
                            reason::UNREACHABLE
                        };
                        return Err(Failure::new(e, reason));
                    }
                    Err(_) => {
                        conn.abort().await;
                        return Err(Failure::new(
                            SendError::transient(format!(
                                "the OAuth2 token endpoint did not answer within {command_timeout:?}; nothing was sent"
                            )),
                            reason::TIMEOUT,
                        ));
                    }
                };
                let credentials = Credentials::new(user.clone(), token.expose().to_string());
                let auth = conn.auth(&[Mechanism::Xoauth2], &credentials);
                self.step(Step::Auth, command_timeout, auth).await?;
            }
            None => {}
        }
        Ok(conn)
    }

    /// TCP connect, a look at the first bytes (see [`greeting`]), then lettre reads the
    /// greeting and sends EHLO.
    async fn connect_plain(&self, limits: SmtpTimeouts) -> Result<AsyncSmtpConnection, Failure> {
        let tcp = match greeting::connect(&self.host, self.port, limits.connect).await {
            Ok(tcp) => tcp,
            Err(Some(e)) => {
                return Err(Failure::new(
                    SendError::transient(format!(
                        "SMTP with {} failed while {}: {e}; nothing was handed over",
                        self.addr(),
                        Step::Connect.describe()
                    )),
                    reason::UNREACHABLE,
                ));
            }
            Err(None) => return Err(self.timed_out(Step::Connect, limits.connect)),
        };
        let wait = greeting::wait_for(self.port, limits.greeting, limits.command);
        match greeting::first_bytes(&tcp, wait).await {
            FirstBytes::Plain => {}
            FirstBytes::Tls => return Err(self.tls_instead_of_greeting()),
            FirstBytes::Silent => return Err(self.no_greeting(wait)),
        }
        let connect = AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello);
        self.step(Step::Connect, limits.command, connect).await
    }

    /// `MAIL FROM` with the parameters the message needs, refused before anything is sent
    /// when the server lacks the extension for them.
    pub(super) async fn mail_from(
        &self,
        conn: &mut AsyncSmtpConnection,
        from: Option<&Address>,
        non_ascii_address: bool,
        eight_bit_body: bool,
        command_timeout: Duration,
    ) -> Result<(), Failure> {
        let mut params = Vec::new();
        if non_ascii_address {
            self.require(
                conn,
                Extension::SmtpUtfEight,
                "SMTPUTF8",
                "non-ASCII addresses",
            )?;
            params.push(MailParameter::SmtpUtfEight);
        }
        if eight_bit_body {
            self.require(conn, Extension::EightBitMime, "8BITMIME", "8-bit content")?;
            params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        let mail = conn.command(Mail::new(from.cloned(), params));
        self.step(Step::Mail, command_timeout, mail).await?;
        Ok(())
    }

    /// Ends a transaction that sent no DATA, leaving the connection ready for another.
    pub(super) async fn reset(
        &self,
        conn: &mut AsyncSmtpConnection,
        command_timeout: Duration,
    ) -> Result<(), Failure> {
        let rset = conn.command(Rset);
        self.step(Step::Reset, command_timeout, rset).await?;
        Ok(())
    }

    /// Sends one message over an open connection. `data_timeout` bounds the wait for the
    /// final reply, the only step whose timeout leaves the outcome unknown.
    pub(super) async fn transfer(
        &self,
        conn: &mut AsyncSmtpConnection,
        envelope: &lettre::address::Envelope,
        body: &[u8],
        command_timeout: Duration,
        data_timeout: Duration,
    ) -> Result<String, Failure> {
        let non_ascii_address = envelope
            .from()
            .into_iter()
            .chain(envelope.to())
            .any(|a| !AsRef::<str>::as_ref(a).is_ascii());
        self.mail_from(
            conn,
            envelope.from(),
            non_ascii_address,
            !body.is_ascii(),
            command_timeout,
        )
        .await?;
        // Which recipient failed, by position: the address itself stays out of messages.
        let count = envelope.to().len();
        for (n, rcpt) in envelope.to().iter().enumerate() {
            let cmd = conn.command(Rcpt::new(rcpt.clone(), vec![]));
            self.step(Step::Rcpt, command_timeout, cmd)
                .await
                .map_err(|mut f| {
                    f.error.message = format!(
                        "{} (envelope recipient {} of {count}: To, then Cc, then Bcc)",
                        f.error.message,
                        n + 1
                    );
                    f
                })?;
        }
        let data = conn.command(Data);
        self.step(Step::Data, command_timeout, data).await?;
        let response = self
            .step(Step::Body, data_timeout, conn.message(body))
            .await?;
        Ok(response.message().collect::<Vec<_>>().join(" "))
    }

    fn require(
        &self,
        conn: &AsyncSmtpConnection,
        ext: Extension,
        name: &str,
        why: &str,
    ) -> Result<(), Failure> {
        if conn.server_info().supports_feature(ext) {
            return Ok(());
        }
        Err(Failure::new(
            SendError::permanent(format!(
                "SMTP server {} does not support {name}, which {why} need",
                self.addr()
            )),
            reason::PROVIDER_ERROR,
        ))
    }

    /// Runs one step under a time limit and classifies its failure.
    pub(super) async fn step<T>(
        &self,
        step: Step,
        limit: Duration,
        fut: impl Future<Output = Result<T, LettreError>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(limit, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.classify(step, &e)),
            Err(_) => Err(self.timed_out(step, limit)),
        }
    }
}
