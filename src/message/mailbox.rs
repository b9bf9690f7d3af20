//! Mailboxes as users write them in manifests: `a@b.c`, `Name <a@b.c>` or
//! `"Last, First" <a@b.c>`.

use std::fmt;
use std::str::FromStr;

/// Longest addr-spec a mail system must accept (RFC 5321 path limit minus the brackets).
const MAX_ADDRESS_LEN: usize = 254;
/// Longest display name we accept; the CRD allows 100 for senders, this leaves room for
/// recipients' names without letting a header grow unbounded.
const MAX_NAME_LEN: usize = 200;

/// One mailbox: an optional display name and an addr-spec.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Mailbox {
    /// Display name, unquoted (`Last, First`, not `"Last, First"`).
    pub name: Option<String>,
    /// The addr-spec, `local@domain`.
    pub address: String,
}

/// Why a mailbox string was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("is empty")]
    Empty,
    #[error("contains a line break or control character, which could inject mail headers")]
    ControlCharacter,
    #[error("has a '<' without a closing '>'; write `Name <user@example.com>`")]
    UnclosedAngle,
    #[error("has text after the closing '>'")]
    TrailingText,
    #[error("has an unterminated quoted name; close the '\"'")]
    UnterminatedQuote,
    #[error("display name is longer than {MAX_NAME_LEN} characters")]
    NameTooLong,
    #[error(
        "the display name holds an '@' or a ',', so it reads as another address; quote it (`\"Last, First\" <user@example.com>`) or write one address per list entry"
    )]
    AmbiguousName,
    #[error("`{0}` is not an email address like user@example.com")]
    InvalidAddress(String),
    #[error("address is longer than {MAX_ADDRESS_LEN} characters")]
    AddressTooLong,
}

impl Mailbox {
    /// A mailbox without display name, validating the address.
    pub fn new(name: Option<String>, address: &str) -> Result<Mailbox, AddressError> {
        let name = name.map(|n| n.trim().to_string()).filter(|n| !n.is_empty());
        if let Some(n) = &name {
            check_name(n)?;
        }
        let address = address.trim();
        check_address(address)?;
        Ok(Mailbox {
            name,
            address: address.to_string(),
        })
    }

    /// Parses `a@b.c`, `Name <a@b.c>`, `"Last, First" <a@b.c>` or `<a@b.c>`.
    pub fn parse(s: &str) -> Result<Mailbox, AddressError> {
        if s.chars().any(char::is_control) {
            return Err(AddressError::ControlCharacter);
        }
        let s = s.trim();
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        let Some(open) = s.rfind('<') else {
            if s.contains('>') {
                return Err(AddressError::InvalidAddress(s.to_string()));
            }
            return Mailbox::new(None, s);
        };
        let rest = &s[open + 1..];
        let Some(close) = rest.find('>') else {
            return Err(AddressError::UnclosedAngle);
        };
        if !rest[close + 1..].trim().is_empty() {
            return Err(AddressError::TrailingText);
        }
        let raw_name = s[..open].trim();
        // `a@example.org, Evil <evil@x.example>` is one mailbox, evil@x.example, that a reader
        // (and a list column) would take for a@example.org: a name that looks like an
        // address or a list must be quoted to count as a name.
        if !raw_name.starts_with('"') && raw_name.contains(['@', ',']) {
            return Err(AddressError::AmbiguousName);
        }
        let name = unquote_name(raw_name)?;
        Mailbox::new(name, &rest[..close])
    }

    /// The domain part of the address (after the last `@`).
    pub fn domain(&self) -> &str {
        self.address
            .rsplit_once('@')
            .map(|(_, d)| d)
            .unwrap_or_default()
    }
}

impl FromStr for Mailbox {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mailbox::parse(s)
    }
}

impl fmt::Display for Mailbox {
    /// RFC 5322 form: the name as a plain phrase when it is one, quoted otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            None => f.write_str(&self.address),
            Some(name) if is_phrase(name) => write!(f, "{name} <{}>", self.address),
            Some(name) => {
                f.write_str("\"")?;
                for c in name.chars() {
                    if c == '"' || c == '\\' {
                        f.write_str("\\")?;
                    }
                    write!(f, "{c}")?;
                }
                write!(f, "\" <{}>", self.address)
            }
        }
    }
}

/// Strips the quotes of a quoted display name and undoes its backslash escapes.
fn unquote_name(raw: &str) -> Result<Option<String>, AddressError> {
    if raw.is_empty() {
        return Ok(None);
    }
    let Some(inner) = raw.strip_prefix('"') else {
        return Ok(Some(raw.to_string()));
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next().ok_or(AddressError::UnterminatedQuote)?),
            '"' => {
                return if chars.as_str().trim().is_empty() {
                    Ok(Some(out))
                } else {
                    Err(AddressError::TrailingText)
                };
            }
            c => out.push(c),
        }
    }
    Err(AddressError::UnterminatedQuote)
}

/// True when the name can be written without quotes: words of RFC 5322 `atext`
/// (non-ASCII allowed per RFC 6532) separated by single spaces.
fn is_phrase(name: &str) -> bool {
    const SPECIALS: &str = "()<>[]:;@\\,.\"";
    !name.is_empty()
        && !name.contains("  ")
        && name
            .chars()
            .all(|c| c == ' ' || (!c.is_ascii_control() && !SPECIALS.contains(c)))
}

fn check_name(name: &str) -> Result<(), AddressError> {
    if name.chars().any(char::is_control) {
        return Err(AddressError::ControlCharacter);
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(AddressError::NameTooLong);
    }
    Ok(())
}

/// Validates an addr-spec the way the SMTP transport will, so an Email that passes here is
/// sendable by every provider.
fn check_address(address: &str) -> Result<(), AddressError> {
    if address.is_empty() {
        return Err(AddressError::Empty);
    }
    if address.chars().any(char::is_control) {
        return Err(AddressError::ControlCharacter);
    }
    if address.len() > MAX_ADDRESS_LEN {
        return Err(AddressError::AddressTooLong);
    }
    let invalid = || AddressError::InvalidAddress(address.to_string());
    if address
        .chars()
        .any(|c| c.is_whitespace() || "<>\",;".contains(c))
    {
        return Err(invalid());
    }
    let (_, domain) = address.rsplit_once('@').ok_or_else(invalid)?;
    // A bare host name (`root@localhost`) is legal SMTP but never what a manifest means, and
    // the HTTP providers refuse it: ask for a dotted domain.
    if !domain.contains('.') || domain.starts_with('.') || domain.ends_with('.') {
        return Err(invalid());
    }
    lettre::Address::from_str(address).map_err(|_| invalid())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mb(name: Option<&str>, address: &str) -> Mailbox {
        Mailbox {
            name: name.map(str::to_string),
            address: address.to_string(),
        }
    }

    #[test]
    fn a_bare_address_parses_without_a_name() {
        assert_eq!(Mailbox::parse(" a@b.co ").unwrap(), mb(None, "a@b.co"));
    }

    #[test]
    fn a_name_and_angle_address_parse() {
        assert_eq!(
            Mailbox::parse("Jane Doe <jane@example.com>").unwrap(),
            mb(Some("Jane Doe"), "jane@example.com")
        );
        assert_eq!(
            Mailbox::parse("<jane@example.com>").unwrap(),
            mb(None, "jane@example.com")
        );
    }

    #[test]
    fn a_quoted_name_with_a_comma_and_escapes_parses() {
        assert_eq!(
            Mailbox::parse(r#""Doe, Jane \"JD\"" <jane@example.com>"#).unwrap(),
            mb(Some(r#"Doe, Jane "JD""#), "jane@example.com")
        );
    }

    #[test]
    fn a_display_name_that_reads_as_an_address_or_a_list_must_be_quoted() {
        assert_eq!(
            Mailbox::parse("a@example.org, Evil <evil@x.example>"),
            Err(AddressError::AmbiguousName)
        );
        assert_eq!(
            Mailbox::parse("Lovelace, Ada <ada@example.org>"),
            Err(AddressError::AmbiguousName)
        );
        let quoted = Mailbox::parse("\"Lovelace, Ada\" <ada@example.org>").unwrap();
        assert_eq!(quoted.name.as_deref(), Some("Lovelace, Ada"));
        assert!(Mailbox::parse("Ada Lovelace <ada@example.org>").is_ok());
    }

    #[test]
    fn display_quotes_only_when_needed_and_round_trips() {
        for (m, shown) in [
            (mb(None, "a@b.co"), "a@b.co"),
            (mb(Some("Jane Doe"), "a@b.co"), "Jane Doe <a@b.co>"),
            (mb(Some("Doe, Jane"), "a@b.co"), "\"Doe, Jane\" <a@b.co>"),
            (
                mb(Some("J. \"Q\" Doe"), "a@b.co"),
                r#""J. \"Q\" Doe" <a@b.co>"#,
            ),
            (mb(Some("Zoë Ünal"), "a@b.co"), "Zoë Ünal <a@b.co>"),
        ] {
            assert_eq!(m.to_string(), shown);
            assert_eq!(Mailbox::parse(shown).unwrap(), m);
        }
    }

    #[test]
    fn malformed_mailboxes_are_refused_with_a_reason() {
        assert_eq!(Mailbox::parse("  "), Err(AddressError::Empty));
        assert_eq!(
            Mailbox::parse("a@b.co\r\nBcc: x@y.z"),
            Err(AddressError::ControlCharacter)
        );
        assert_eq!(
            Mailbox::parse("Jane <jane@example.com"),
            Err(AddressError::UnclosedAngle)
        );
        assert_eq!(
            Mailbox::parse("Jane <jane@example.com> x"),
            Err(AddressError::TrailingText)
        );
        assert_eq!(
            Mailbox::parse("\"Jane <jane@example.com>"),
            Err(AddressError::UnterminatedQuote)
        );
        for bad in [
            "jane",
            "jane@",
            "@example.com",
            "jane@localhost",
            "a b@c.de",
            "a@b@c.de",
        ] {
            assert!(
                matches!(Mailbox::parse(bad), Err(AddressError::InvalidAddress(_))),
                "{bad} should be invalid"
            );
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(Mailbox::parse(&long), Err(AddressError::AddressTooLong));
    }

    #[test]
    fn the_domain_is_the_part_after_the_at_sign() {
        assert_eq!(mb(None, "a@mail.example.com").domain(), "mail.example.com");
    }
}
