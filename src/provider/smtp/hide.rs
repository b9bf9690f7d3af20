//! Recipient addresses out of failure messages.
//!
//! Failure messages end up in status, Events and logs, where recipients do not belong. Our
//! own texts never name them, but servers echo the address in RCPT replies
//! (`550 5.1.1 <jane@example.org>: Recipient address rejected`), and that reply text is the
//! most useful part of the message, so it is kept with the addresses taken out.

/// What stands in for a hidden address.
const HIDDEN: &str = "a recipient";

/// `text` with every occurrence of each address replaced, ignoring ASCII case (servers may
/// lower-case what they echo).
pub(super) fn hide_recipients<'a>(
    text: &str,
    addresses: impl IntoIterator<Item = &'a str>,
) -> String {
    let mut out = text.to_string();
    for address in addresses {
        if address.is_empty() {
            continue;
        }
        let needle = address.to_ascii_lowercase();
        // ASCII lower-casing keeps byte offsets, so positions in `lower` are positions in `out`.
        let lower = out.to_ascii_lowercase();
        if !lower.contains(&needle) {
            continue;
        }
        let mut replaced = String::with_capacity(out.len());
        let mut rest = 0;
        for (at, _) in lower.match_indices(&needle) {
            replaced.push_str(&out[rest..at]);
            replaced.push_str(HIDDEN);
            rest = at + needle.len();
        }
        replaced.push_str(&out[rest..]);
        out = replaced;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_addresses_are_hidden_whatever_their_case() {
        let reply = "550 5.1.1 <Jane@Example.ORG>: Recipient address rejected; bob@example.org too";
        assert_eq!(
            hide_recipients(reply, ["jane@example.org", "bob@example.org", ""]),
            "550 5.1.1 <a recipient>: Recipient address rejected; a recipient too"
        );
    }

    #[test]
    fn text_without_addresses_is_unchanged() {
        let text = "451 4.3.0 try again later";
        assert_eq!(hide_recipients(text, ["jane@example.org"]), text);
    }
}
