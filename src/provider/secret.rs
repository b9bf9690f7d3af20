//! Secret values (API tokens, keys, SMTP passwords) and the guard that keeps them out of
//! every message kmailops writes.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// A secret string. Debug and Display print `<redacted>`; [`SecretValue::expose`] is the
/// only way to read it, so a stray `{:?}` in a log line can not leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(value: impl Into<String>) -> Self {
        SecretValue(value.into())
    }
    /// The secret itself, for the one place that sends it to the provider.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What a provider authenticates with, loaded from the config's Secrets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The value of the first Secret reference of the config (see
    /// [`crate::provider::required_secrets`]): the MailerSend API token, Mailgun or Resend
    /// API key, SMTP password, or the SMTP OAuth2 client secret.
    pub secret: Option<SecretValue>,
    /// Values keyed by the field that references them (`spec.ses.secretAccessKeySecretRef`),
    /// for configs that reference more than one Secret key. A field missing here falls back
    /// to `secret` when it is the config's first reference.
    pub by_field: BTreeMap<String, SecretValue>,
}

impl Credentials {
    pub fn new(secret: impl Into<String>) -> Self {
        Credentials {
            secret: Some(SecretValue::new(secret)),
            by_field: BTreeMap::new(),
        }
    }

    /// Adds the value of the Secret key that `field` references.
    pub fn with(mut self, field: &str, value: impl Into<String>) -> Self {
        self.by_field
            .insert(field.to_string(), SecretValue::new(value));
        self
    }

    /// From the bytes of a Secret key. A trailing line break (from `kubectl create secret
    /// --from-file` or an editor) is dropped, since no token or password ends in one and
    /// providers would refuse it. The error never contains the value.
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| "the Secret value is not UTF-8 text".to_string())?;
        Ok(Credentials::new(text.trim_end_matches(['\n', '\r'])))
    }
}

/// Strips the line break an editor or `echo` leaves at the end of a Secret value.
pub(crate) fn trim_secret_text(text: &str) -> &str {
    text.trim_end_matches(['\n', '\r'])
}

/// Too short to redact without mangling ordinary text; real tokens are far longer.
const MIN_REDACTABLE_LEN: usize = 4;

/// Removes a secret, and the encodings it travels in (HTTP Basic, SMTP AUTH PLAIN/LOGIN),
/// from text that came back from a provider: a server that echoes our request must not
/// make the secret show up in status, Events or logs.
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    needles: Vec<String>,
    learned: LearnedSecrets,
}

/// Secrets that only appear while a provider runs (OAuth2 access tokens, AWS session
/// credentials from the default chain): the provider adds them here as it learns them, and
/// [`crate::provider`]'s wrapper scrubs them too.
#[derive(Clone, Default)]
pub(crate) struct LearnedSecrets {
    inner: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl LearnedSecrets {
    /// Remembers a secret (kept bounded: old ones are only needed while errors about them
    /// can still come back).
    pub(crate) fn learn(&self, secret: &str) {
        if secret.len() < MIN_REDACTABLE_LEN {
            return;
        }
        let mut all = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if !all.iter().any(|s| s == secret) {
            all.push(secret.to_string());
            let excess = all.len().saturating_sub(16);
            all.drain(..excess);
        }
    }

    pub(crate) fn scrub(&self, text: &str) -> String {
        let all = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = text.to_string();
        for secret in all.iter() {
            for needle in [secret.clone(), STANDARD.encode(secret)] {
                if out.contains(needle.as_str()) {
                    out = out.replace(needle.as_str(), "<redacted>");
                }
            }
        }
        out
    }
}

impl fmt::Debug for LearnedSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LearnedSecrets(<redacted>)")
    }
}

impl Redactor {
    /// A redactor for several secrets at once (SES key pair, OAuth2 client secret).
    pub(crate) fn many(secrets: &[&SecretValue], user: Option<&str>) -> Self {
        let mut needles = Vec::new();
        for s in secrets {
            needles.extend(Redactor::new(Some(s), user).needles);
        }
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup();
        Redactor {
            needles,
            learned: LearnedSecrets::default(),
        }
    }

    /// Also scrubs the secrets a provider learns while it runs.
    pub(crate) fn with_learned(mut self, learned: LearnedSecrets) -> Self {
        self.learned = learned;
        self
    }

    /// `user` is the Basic-auth or SMTP user name sent along with the secret.
    pub(crate) fn new(secret: Option<&SecretValue>, user: Option<&str>) -> Self {
        let Some(secret) = secret.map(SecretValue::expose) else {
            return Redactor::default();
        };
        if secret.len() < MIN_REDACTABLE_LEN {
            return Redactor::default();
        }
        let user = user.unwrap_or_default();
        let mut needles = vec![
            secret.to_string(),
            STANDARD.encode(secret),
            STANDARD.encode(format!("{user}:{secret}")),
            STANDARD.encode(format!("\0{user}\0{secret}")),
        ];
        // Longest first, so a needle that contains another is replaced whole.
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup();
        Redactor {
            needles,
            learned: LearnedSecrets::default(),
        }
    }

    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut out = self.learned.scrub(text);
        for needle in &self.needles {
            if out.contains(needle.as_str()) {
                out = out.replace(needle.as_str(), "<redacted>");
            }
        }
        out
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Redactor(<redacted>)")
    }
}

/// Loaded credentials plus the Secret's resourceVersion, so a rotated Secret rebuilds the client.
pub struct Loaded {
    pub credentials: Credentials,
    pub secret_version: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let s = SecretValue::new("tok-3f9a-very-secret");
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
        let c = Credentials::new("tok-3f9a-very-secret");
        assert!(!format!("{c:?}").contains("tok-3f9a"));
        assert_eq!(s.expose(), "tok-3f9a-very-secret");
    }

    #[test]
    fn secret_bytes_lose_a_trailing_line_break_and_must_be_text() {
        let c = Credentials::from_secret_bytes(b"tok-123\r\n").expect("text");
        assert_eq!(c.secret.as_ref().map(SecretValue::expose), Some("tok-123"));
        let err = Credentials::from_secret_bytes(b"\xff\xfe").expect_err("binary");
        assert!(!err.contains('\u{fffd}'));
    }

    #[test]
    fn the_redactor_removes_the_secret_and_its_auth_encodings() {
        let secret = SecretValue::new("key-123456");
        let r = Redactor::new(Some(&secret), Some("api"));
        let basic = STANDARD.encode("api:key-123456");
        let plain = STANDARD.encode("\0api\0key-123456");
        let text = format!("got key-123456, Basic {basic}, AUTH PLAIN {plain}");
        let scrubbed = r.scrub(&text);
        assert!(!scrubbed.contains("key-123456"), "{scrubbed}");
        assert!(
            !scrubbed.contains(&basic) && !scrubbed.contains(&plain),
            "{scrubbed}"
        );
        assert_eq!(scrubbed.matches("<redacted>").count(), 3);
    }

    #[test]
    fn secrets_learned_at_run_time_are_scrubbed_raw_and_base64_encoded() {
        let learned = LearnedSecrets::default();
        let r = Redactor::many(&[&SecretValue::new("client-secret-1")], None)
            .with_learned(learned.clone());
        let xoauth2 = "user=a@b.c\x01auth=Bearer tok-abc-123\x01\x01";
        let text = format!(
            "secret client-secret-1, token tok-abc-123, AUTH XOAUTH2 {}",
            STANDARD.encode(xoauth2)
        );
        // Before the provider learns the token, only the static secret goes.
        assert!(r.scrub(&text).contains("tok-abc-123"));
        learned.learn("tok-abc-123");
        learned.learn(xoauth2);
        let scrubbed = r.scrub(&text);
        assert!(!scrubbed.contains("client-secret-1"), "{scrubbed}");
        assert!(!scrubbed.contains("tok-abc-123"), "{scrubbed}");
        assert!(!scrubbed.contains(&STANDARD.encode(xoauth2)), "{scrubbed}");
        assert!(!format!("{learned:?} {r:?}").contains("tok-abc"));
    }

    #[test]
    fn learned_secrets_stay_bounded() {
        let learned = LearnedSecrets::default();
        for i in 0..40 {
            learned.learn(&format!("token-{i:04}"));
        }
        assert!(learned.scrub("token-0039").contains("<redacted>"));
        assert_eq!(learned.scrub("token-0000"), "token-0000");
    }
}
