//! Which hosts senders may point the operator at (`--allowed-endpoint`).
//!
//! A tenant's EmailSenderConfig chooses where the operator connects: `baseUrl`, `endpoint`,
//! `smtp.host`, an OAuth2 `tokenUrl`. In a shared cluster that makes the operator a client
//! inside the cluster network that any tenant can aim (at an internal service, with a
//! Secret as its Bearer token). With a list of host patterns set, only the listed hosts may
//! be used in those fields; the providers' own public endpoints, used when the fields are
//! left unset, stay allowed. With no list, nothing is restricted.

use crate::api::EmailSenderConfigSpec;
use crate::api::sender_config::default_mailersend_base_url;

/// Host patterns: `smtp.example.com` (that host), `*.example.com` (any host below
/// example.com, not example.com itself), `*` (any host). Case does not matter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedEndpoints {
    patterns: Vec<String>,
}

/// A field of a sender that names a host the list does not allow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotAllowed {
    /// e.g. `spec.mailersend.baseUrl`.
    pub field: &'static str,
    pub host: String,
}

impl std::fmt::Display for NotAllowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: host {} is not among the endpoints this operator allows (--allowed-endpoint): use an allowed host, or ask the operator's administrators to allow it",
            self.field, self.host
        )
    }
}

impl AllowedEndpoints {
    pub fn new(patterns: impl IntoIterator<Item = String>) -> Self {
        AllowedEndpoints {
            patterns: patterns
                .into_iter()
                .map(|p| p.trim().trim_end_matches('.').to_ascii_lowercase())
                .filter(|p| !p.is_empty())
                .collect(),
        }
    }

    /// No list: every host is allowed.
    pub fn is_unrestricted(&self) -> bool {
        self.patterns.is_empty()
    }

    pub fn allows(&self, host: &str) -> bool {
        if self.is_unrestricted() {
            return true;
        }
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        self.patterns.iter().any(|p| match p.strip_prefix("*.") {
            _ if p == "*" => true,
            Some(suffix) => host
                .strip_suffix(suffix)
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
            None => *p == host,
        })
    }

    /// The first field of `spec` that names a host the list does not allow.
    pub fn check(&self, spec: &EmailSenderConfigSpec) -> Result<(), NotAllowed> {
        if self.is_unrestricted() {
            return Ok(());
        }
        for (field, host) in chosen_hosts(spec) {
            if !self.allows(&host) {
                return Err(NotAllowed { field, host });
            }
        }
        Ok(())
    }
}

/// The hosts a spec chooses itself, by field. Unset fields (the provider's public endpoint)
/// are not listed; a URL that does not parse is listed by its whole text, which no pattern
/// but `*` matches.
fn chosen_hosts(spec: &EmailSenderConfigSpec) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let mut url = |field: &'static str, value: Option<&String>| {
        if let Some(v) = value {
            let host = reqwest::Url::parse(v)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_else(|| v.clone());
            out.push((field, host));
        }
    };
    if let Some(m) = &spec.mailersend {
        let custom = (m.base_url != default_mailersend_base_url()).then_some(&m.base_url);
        url("spec.mailersend.baseUrl", custom);
    }
    if let Some(m) = &spec.mailgun {
        url("spec.mailgun.baseUrl", m.base_url.as_ref());
    }
    if let Some(r) = &spec.resend {
        url("spec.resend.baseUrl", r.base_url.as_ref());
    }
    if let Some(p) = &spec.postmark {
        url("spec.postmark.baseUrl", p.base_url.as_ref());
    }
    if let Some(s) = &spec.sendgrid {
        url("spec.sendgrid.baseUrl", s.base_url.as_ref());
    }
    if let Some(s) = &spec.ses {
        url("spec.ses.endpoint", s.endpoint.as_ref());
    }
    if let Some(s) = &spec.smtp {
        if let Some(o) = &s.oauth2 {
            url("spec.smtp.oauth2.tokenUrl", Some(&o.token_url));
        }
        out.push(("spec.smtp.host", s.host.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(provider: serde_json::Value) -> EmailSenderConfigSpec {
        let mut v = json!({"sender": {"address": "a@example.com"}});
        if let serde_json::Value::Object(m) = provider {
            for (k, val) in m {
                v[k] = val;
            }
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn patterns_match_hosts_exactly_or_below_a_wildcard() {
        let list = AllowedEndpoints::new(["smtp.example.com".into(), "*.Mail.Example.".into()]);
        let cases = [
            ("smtp.example.com", true),
            ("SMTP.example.com.", true),
            ("other.example.com", false),
            ("eu.mail.example", true),
            ("a.b.mail.example", true),
            ("mail.example", false),
            ("evilmail.example", false),
            ("", false),
        ];
        for (host, allowed) in cases {
            assert_eq!(list.allows(host), allowed, "{host}");
        }
        assert!(AllowedEndpoints::new(["*".into()]).allows("anything.internal"));
        assert!(AllowedEndpoints::default().allows("anything.internal"));
    }

    #[test]
    fn only_fields_a_sender_sets_itself_are_checked() {
        let list = AllowedEndpoints::new(["smtp.example.com".into()]);
        let public = spec(json!({"mailersend": {"apiTokenSecretRef": {"name": "t", "key": "k"}}}));
        assert_eq!(list.check(&public), Ok(()));
        let internal = spec(json!({"mailersend": {
            "apiTokenSecretRef": {"name": "t", "key": "k"},
            "baseUrl": "http://vault.internal:8200/v1"
        }}));
        assert_eq!(
            list.check(&internal),
            Err(NotAllowed {
                field: "spec.mailersend.baseUrl",
                host: "vault.internal".into()
            })
        );
        let smtp = spec(json!({"smtp": {"host": "10.0.0.7"}}));
        assert_eq!(list.check(&smtp).unwrap_err().field, "spec.smtp.host");
        let fine = spec(json!({"smtp": {"host": "smtp.example.com"}}));
        assert_eq!(list.check(&fine), Ok(()));
        assert_eq!(AllowedEndpoints::default().check(&smtp), Ok(()));
    }
}
