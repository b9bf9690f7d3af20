//! Asking a provider whether a message of ours already went out, by its delivery key.
//!
//! What a provider can tell differs: Postmark's message search finds a message by its
//! metadata at once; Mailgun's events find it by Message-ID and user variable, but arrive late,
//! so their absence means something only after a settling time; Resend cannot be searched, but
//! drops a repeat of the same `Idempotency-Key` for 24 hours; the rest keep nothing we can ask.

use std::time::Duration;

use super::error::chain;
use super::http;

/// What a provider remembers of the messages it accepted, as far as we can ask it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recall {
    /// Nothing we can ask: the ledger is the only record (SES, SendGrid, MailerSend, SMTP).
    Nothing,
    /// A repeat with the same delivery key is answered, not sent, for this long (Resend).
    Deduplicates(Duration),
    /// Searchable by the delivery key. `settles`: a message accepted moments ago may not show
    /// yet (Mailgun's events), so not finding it means something only after a settling time.
    Searchable { settles: bool },
}

impl Recall {
    /// What a provider of this kind remembers, known from the config alone (without
    /// credentials or a client): a sender that can not be built can still be known to be one
    /// that would have to be asked.
    pub fn of(kind: crate::api::ProviderKind) -> Recall {
        use crate::api::ProviderKind;
        match kind {
            ProviderKind::Postmark => Recall::Searchable { settles: false },
            ProviderKind::Mailgun => Recall::Searchable { settles: true },
            ProviderKind::Resend => Recall::Deduplicates(RESEND_WINDOW),
            ProviderKind::MailerSend
            | ProviderKind::Smtp
            | ProviderKind::SendGrid
            | ProviderKind::Ses => Recall::Nothing,
        }
    }
}

/// Resend keeps an `Idempotency-Key` for 24 hours.
pub const RESEND_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// What a look-up found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupAnswer {
    /// The provider has the message: it was accepted, under this id.
    Found { message_id: String },
    /// The provider answered, and the message is not there.
    Absent,
    /// The provider could not be asked (down, refused, no answer in time); never a secret in it.
    Failed(String),
}

/// A read-only request of a look-up: any failure before an answer is a failed look-up.
pub(crate) async fn ask(
    req: reqwest::RequestBuilder,
    provider: &str,
) -> Result<http::Reply, LookupAnswer> {
    match req.send().await {
        Ok(response) => Ok(http::read(response).await),
        Err(e) if e.is_timeout() => Err(LookupAnswer::Failed(format!(
            "{provider} did not answer the look-up in time: {}",
            chain(&e)
        ))),
        Err(e) => Err(LookupAnswer::Failed(format!(
            "could not reach {provider} for the look-up: {}",
            chain(&e)
        ))),
    }
}
