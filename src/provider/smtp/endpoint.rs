//! Where an SMTP conversation goes and how it authenticates, and the steps it takes: what
//! both the conversation (`session`) and the wording of its failures (`failure`) name.

use std::sync::Arc;

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::TlsParameters;
use lettre::transport::smtp::extension::ClientId;

use super::oauth2::TokenSource;

/// Where a conversation was when it failed. Everything before `Body` happens before the
/// server has the message; from `Body` on, the server may have accepted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    Connect,
    StartTls,
    Auth,
    Mail,
    Reset,
    Rcpt,
    Data,
    Body,
}

impl Step {
    pub(super) fn describe(self) -> &'static str {
        match self {
            Step::Connect => "connecting and reading the greeting",
            Step::StartTls => "upgrading the connection with STARTTLS",
            Step::Auth => "authenticating",
            Step::Mail => "sending MAIL FROM",
            Step::Reset => "resetting the transaction (RSET)",
            Step::Rcpt => "sending RCPT TO",
            Step::Data => "starting DATA",
            Step::Body => "waiting for the server to accept the message",
        }
    }
}

/// How to authenticate.
pub(super) enum Auth {
    /// AUTH PLAIN or LOGIN with a password.
    Password(Credentials),
    /// AUTH XOAUTH2 as `user` with a token from the client-credentials grant.
    OAuth2 {
        user: String,
        tokens: Arc<TokenSource>,
    },
}

/// Where to connect and how.
pub(super) struct Endpoint {
    pub host: String,
    pub port: u16,
    pub implicit_tls: Option<TlsParameters>,
    pub starttls: Option<TlsParameters>,
    pub auth: Option<Auth>,
    pub hello: ClientId,
}

impl Endpoint {
    pub(super) fn uses_oauth2(&self) -> bool {
        matches!(self.auth, Some(Auth::OAuth2 { .. }))
    }

    pub(super) fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}
