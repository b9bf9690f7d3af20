//! How a send failed, in the terms the retry and failover logic needs.

use std::fmt;
use std::time::Duration;

/// What the controller may do after a failed send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Nothing was handed over (network, timeout before the request went out, 4xx SMTP,
    /// HTTP 408/421/429/5xx where the provider says nothing was sent): retry with backoff.
    Transient,
    /// The provider refused the message or the config is wrong: retrying will not help.
    Permanent,
    /// The message may or may not have been accepted (timeout after hand-over, Mailgun 5xx):
    /// never resent automatically, or the recipient could get it twice.
    Ambiguous,
}

impl ErrorClass {
    /// The name used in status, Events and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "Transient",
            ErrorClass::Permanent => "Permanent",
            ErrorClass::Ambiguous => "Ambiguous",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed send.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    pub class: ErrorClass,
    /// The provider refused the credentials (HTTP 401/403, SMTP AUTH refusal): the sender's
    /// fault, so the Email fails over to the next sender even though it is permanent.
    pub auth: bool,
    /// What happened, with the provider's own message and field errors; never a secret.
    pub message: String,
    /// How long the provider asked us to wait (429 Retry-After, Mailgun's "try again after").
    pub retry_after: Option<Duration>,
    /// HTTP status, or SMTP reply code, when the provider answered.
    pub status: Option<u16>,
    /// The message was handed over and the answer leaves open whether it was accepted (a 5xx,
    /// a timeout), but the class is `Transient` because the provider drops a repeat (Resend's
    /// key). A later failure must then not send through another sender: this one may be out.
    pub may_be_accepted: bool,
}

impl SendError {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        SendError {
            class,
            auth: false,
            message: message.into(),
            retry_after: None,
            status: None,
            may_be_accepted: false,
        }
    }
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Transient, message)
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Permanent, message)
    }
    pub fn ambiguous(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Ambiguous, message)
    }
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }
    pub fn with_auth(mut self) -> Self {
        self.auth = true;
        self
    }
    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }
}

/// A sender config that can not become a provider; `field` is the path a user fixes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An error with its whole `source()` chain, because the top-level text of network errors
/// ("error sending request") hides the cause a user needs ("connection refused").
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Finds a rustls error anywhere in a chain; I/O errors carry it as their inner error,
/// which `source()` skips, so look inside them too.
pub(crate) fn find_tls_error<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        current = e.source();
    }
    None
}
