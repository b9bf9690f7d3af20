//! How a failed SMTP step reads: its class (nothing handed over, ambiguous, permanent), the
//! health reason, and a hint that names the setting to change.

use std::time::Duration;

use lettre::transport::smtp::Error as LettreError;

use super::endpoint::{Endpoint, Step};
use super::greeting::IMPLICIT_TLS_PORT;
use crate::provider::error::{chain, find_tls_error};
use crate::provider::{SendError, reason};

/// A failure plus the health reason it stands for.
pub(super) struct Failure {
    pub error: SendError,
    pub reason: &'static str,
}

impl Failure {
    pub(super) fn new(error: SendError, reason: &'static str) -> Self {
        Failure { error, reason }
    }
}

impl Endpoint {
    pub(super) fn tls_instead_of_greeting(&self) -> Failure {
        Failure::new(
            SendError::permanent(format!(
                "SMTP server {} began with TLS instead of an SMTP greeting: the port expects implicit TLS, so set spec.smtp.tls: TLS (port {IMPLICIT_TLS_PORT} usually expects TLS); nothing was sent",
                self.addr()
            )),
            reason::TLS_ERROR,
        )
    }

    pub(super) fn no_greeting(&self, wait: Duration) -> Failure {
        let hint = if self.port == IMPLICIT_TLS_PORT {
            format!(
                "port {IMPLICIT_TLS_PORT} usually expects implicit TLS, where the server waits for the client to start TLS: set spec.smtp.tls: TLS"
            )
        } else {
            format!(
                "if this port expects implicit TLS (usually port {IMPLICIT_TLS_PORT}), the server waits for the client to start TLS: then set spec.smtp.tls: TLS"
            )
        };
        Failure::new(
            SendError::transient(format!(
                "SMTP server {} sent no greeting within {wait:?}; {hint}; nothing was handed over",
                self.addr()
            )),
            reason::TIMEOUT,
        )
    }

    pub(super) fn timed_out(&self, step: Step, limit: Duration) -> Failure {
        let what = format!(
            "SMTP server {} did not answer within {limit:?} while {}",
            self.addr(),
            step.describe()
        );
        let error = if step == Step::Body {
            SendError::ambiguous(format!(
                "{what}; it may have accepted the message, so it is not resent automatically"
            ))
        } else {
            SendError::transient(format!("{what}; nothing was handed over"))
        };
        Failure::new(error, reason::TIMEOUT)
    }

    /// What to change for a failed handshake. A certificate for another name is fixed with
    /// `host`, not with `caBundle`: the CA is trusted, the name is wrong.
    fn tls_hint(&self, tls: &rustls::Error) -> String {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        match tls {
            rustls::Error::InvalidCertificate(NotValidForName | NotValidForNameContext { .. }) => {
                format!(
                    "the server's certificate does not name {}: set spec.smtp.host to a name the certificate is issued for",
                    self.host
                )
            }
            rustls::Error::InvalidCertificate(_) => format!(
                "the server's certificate is not trusted for {}: set spec.smtp.caBundle to the CA that signed it (or, for testing only, spec.smtp.insecureSkipVerify)",
                self.host
            ),
            // The first bytes were no TLS record: a plaintext server greeted us.
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
                if self.implicit_tls.is_some() =>
            {
                format!(
                    "the server answered in plain text, so port {} does not speak implicit TLS: set spec.smtp.tls: StartTLS (usually port 587) or None (usually port 25)",
                    self.port
                )
            }
            _ => "check that spec.smtp.tls matches the port (TLS for 465, StartTLS for 587)"
                .to_string(),
        }
    }

    pub(super) fn classify(&self, step: Step, e: &LettreError) -> Failure {
        let addr = self.addr();
        let detail = chain(e);
        if let Some(code) = e.status() {
            let code = u16::from(code);
            let text = format!(
                "SMTP server {addr} answered {code} while {}: {detail}",
                step.describe()
            );
            return if e.is_transient() {
                Failure::new(
                    SendError::transient(text).with_status(code),
                    reason::PROVIDER_ERROR,
                )
            } else if step == Step::Auth {
                let hint = if self.uses_oauth2() {
                    "the server refused the OAuth2 token even after fetching a new one: check that spec.smtp.username is the mailbox and that the app may send as it (Microsoft 365: SMTP.SendAsApp and a service principal with mailbox permission; Google: domain-wide delegation with the https://mail.google.com/ scope)"
                } else {
                    "check spec.smtp.username and the password in spec.smtp.passwordSecretRef"
                };
                Failure::new(
                    SendError::permanent(format!("{text}; {hint}"))
                        .with_auth()
                        .with_status(code),
                    reason::AUTH_FAILED,
                )
            } else if step == Step::Mail && code == 530 {
                let hint = if self.auth.is_none() {
                    "the server requires authentication: set spec.smtp.username and spec.smtp.passwordSecretRef (or spec.smtp.oauth2)"
                } else {
                    "the server still requires authentication after AUTH succeeded: check that the account may send as spec.sender.address"
                };
                Failure::new(
                    SendError::permanent(format!("{text}; {hint}"))
                        .with_auth()
                        .with_status(code),
                    reason::AUTH_FAILED,
                )
            } else {
                Failure::new(
                    SendError::permanent(text).with_status(code),
                    reason::PROVIDER_ERROR,
                )
            };
        }
        if let Some(tls) = find_tls_error(e) {
            let hint = self.tls_hint(tls);
            return Failure::new(
                SendError::permanent(format!("TLS with SMTP server {addr} failed: {tls}; {hint}")),
                reason::TLS_ERROR,
            );
        }
        if step == Step::Auth && self.uses_oauth2() {
            // Gmail answers a refused token with a 334 challenge (a JSON error) that XOAUTH2
            // clients can not answer; no mechanism in common ends here too.
            return Failure::new(
                SendError::permanent(format!(
                    "SMTP server {addr} did not accept AUTH XOAUTH2: {detail}; either it refused the OAuth2 token even after a new one was fetched (Gmail answers a refused token with a challenge): check that spec.smtp.username is the mailbox and that the app may send as it, or it does not offer XOAUTH2 (most servers offer AUTH only after TLS)"
                ))
                .with_auth(),
                reason::AUTH_FAILED,
            );
        }
        if step == Step::Auth {
            // e.g. no mechanism in common: a config problem of this sender.
            return Failure::new(
                SendError::permanent(format!(
                    "could not authenticate to SMTP server {addr}: {detail}; it must offer AUTH PLAIN or LOGIN (most servers offer AUTH only after TLS)"
                ))
                .with_auth(),
                reason::AUTH_FAILED,
            );
        }
        if step == Step::Body {
            return Failure::new(
                SendError::ambiguous(format!(
                    "the connection to SMTP server {addr} failed while {}: {detail}; it may have accepted the message, so it is not resent automatically",
                    step.describe()
                )),
                reason::PROVIDER_ERROR,
            );
        }
        let health_reason = if step == Step::Connect {
            reason::UNREACHABLE
        } else {
            reason::PROVIDER_ERROR
        };
        Failure::new(
            SendError::transient(format!(
                "SMTP with {addr} failed while {}: {detail}; nothing was handed over",
                step.describe()
            )),
            health_reason,
        )
    }
}
