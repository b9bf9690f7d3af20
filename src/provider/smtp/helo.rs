//! The name this client gives in EHLO.
//!
//! RFC 5321 asks for the client's primary (fully qualified) host name, and some relays refuse
//! a bare pod name. `spec.smtp.heloName` wins; otherwise the host's canonical name from
//! `/etc/hosts` (where the kubelet writes `<pod>.<subdomain>.<namespace>.svc.<domain>` for
//! pods with a subdomain, and distributions write the FQDN of the machine), falling back to
//! the bare host name. `/etc/hosts` stands in for a canonical-name lookup: the resolver's own
//! call needs unsafe FFI, which this crate forbids.

use std::sync::OnceLock;

use lettre::transport::smtp::extension::ClientId;

use crate::provider::ConfigError;

/// The EHLO name: the configured one, checked, or the host's own.
pub(super) fn client_id(configured: Option<&str>) -> Result<ClientId, ConfigError> {
    match configured.map(str::trim).filter(|n| !n.is_empty()) {
        Some(name) if is_dns_name(name) => Ok(ClientId::Domain(name.to_string())),
        Some(name) => Err(ConfigError::new(
            "spec.smtp.heloName",
            format!(
                "`{name}` is not a DNS name (letters, digits, hyphens and dots, at most 253 characters)"
            ),
        )),
        None => Ok(ClientId::Domain(local_name().to_string())),
    }
}

/// Looked up once: the host name does not change while the process runs.
pub(super) fn local_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let bare = match ClientId::default() {
            ClientId::Domain(name) => name,
            other => other.to_string(),
        };
        let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        qualified_name(&bare, &hosts).unwrap_or(bare)
    })
}

/// The fully qualified form of `host`: itself when it already has a dot, else the
/// canonical (first) name of an `/etc/hosts` line that lists it, when that name is
/// qualified.
pub(super) fn qualified_name(host: &str, hosts_file: &str) -> Option<String> {
    if host.contains('.') && is_dns_name(host) {
        return Some(host.to_string());
    }
    hosts_file
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _address = fields.next()?;
            let names: Vec<&str> = fields.collect();
            names
                .iter()
                .any(|n| n.eq_ignore_ascii_case(host))
                .then(|| names.first().copied())
                .flatten()
        })
        .find(|canonical| canonical.contains('.') && is_dns_name(canonical))
        .map(str::to_string)
}

/// Dot-separated labels of 1-63 letters, digits and inner hyphens; at most 253 characters.
/// The same rule as the CRD's pattern, checked again because EHLO goes onto the wire as is.
pub(crate) fn is_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            let bytes = label.as_bytes();
            !bytes.is_empty()
                && bytes.len() <= 63
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
                && bytes[0] != b'-'
                && bytes[bytes.len() - 1] != b'-'
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTS: &str = "# Kubernetes-managed hosts file.\n\
        127.0.0.1\tlocalhost\n\
        ::1\tlocalhost ip6-localhost ip6-loopback\n\
        10.1.2.3\tmailer-0.mailer.mail.svc.cluster.local\tmailer-0\n";

    #[test]
    fn a_pod_with_a_subdomain_gets_its_fully_qualified_name_from_etc_hosts() {
        assert_eq!(
            qualified_name("mailer-0", HOSTS).as_deref(),
            Some("mailer-0.mailer.mail.svc.cluster.local")
        );
    }

    #[test]
    fn a_host_name_without_a_qualified_entry_has_none() {
        assert_eq!(qualified_name("other", HOSTS), None);
        assert_eq!(
            qualified_name("mailer-1", "10.1.2.4 mailer-1 # no FQDN\n"),
            None
        );
    }

    #[test]
    fn a_name_that_is_already_qualified_is_kept() {
        assert_eq!(
            qualified_name("relay.example.com", "").as_deref(),
            Some("relay.example.com")
        );
    }

    #[test]
    fn comments_do_not_count_as_names() {
        assert_eq!(
            qualified_name("box", "10.0.0.9 other # box.example.com box\n"),
            None
        );
    }

    #[test]
    fn a_configured_name_must_be_a_dns_name() {
        assert_eq!(
            client_id(Some("mail.example.com")).ok(),
            Some(ClientId::Domain("mail.example.com".into()))
        );
        for bad in [
            "bad name",
            "-x.example",
            "a..b",
            "x\r\nMAIL FROM:<a@b>",
            &"a".repeat(64),
        ] {
            let err = client_id(Some(bad)).expect_err(bad);
            assert_eq!(err.field, "spec.smtp.heloName");
        }
    }
}
