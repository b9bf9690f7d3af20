//! The delivery key: one value per delivery that can be computed again from Git alone, so a
//! provider that deduplicates (Resend's `Idempotency-Key`) or can be searched (Postmark
//! metadata) recognises a second attempt at the same delivery, even from a rebuilt cluster.

use sha2::{Digest, Sha256};

/// Hex SHA-256 (64 characters) of the Email's namespace, name, delivery hash and retry
/// token, separated by a 0 byte (no part can contain one, so parts can not shift into each
/// other; an absent retry token adds no part, so it differs from an empty one). Never the UID: a cluster rebuilt from Git gives the same Email a
/// new UID, and the key must not change with it.
pub fn delivery_key(
    namespace: &str,
    name: &str,
    delivery_hash: &str,
    retry_token: Option<&str>,
) -> String {
    let mut hasher = Sha256::new();
    hasher.update(namespace.as_bytes());
    for part in [Some(name), Some(delivery_hash), retry_token]
        .into_iter()
        .flatten()
    {
        hasher.update([0u8]);
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_64_hex_digits_and_stable() {
        let k = delivery_key("mail", "welcome", "abc", None);
        assert_eq!(k.len(), 64);
        assert!(k.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(k, delivery_key("mail", "welcome", "abc", None));
    }

    #[test]
    fn every_part_and_the_retry_token_change_the_key() {
        let base = delivery_key("mail", "welcome", "abc", None);
        for other in [
            delivery_key("mail2", "welcome", "abc", None),
            delivery_key("mail", "welcome2", "abc", None),
            delivery_key("mail", "welcome", "abd", None),
            delivery_key("mail", "welcome", "abc", Some("1")),
            delivery_key("mail", "welcome", "abc", Some("")),
        ] {
            assert_ne!(base, other);
        }
        assert_ne!(
            delivery_key("mail", "welcome", "abc", Some("1")),
            delivery_key("mail", "welcome", "abc", Some("2"))
        );
    }

    #[test]
    fn the_key_is_the_sha256_of_the_parts_joined_by_zero_bytes() {
        let expected = hex::encode(Sha256::digest(b"mail\0welcome\0abc\0tok"));
        assert_eq!(
            delivery_key("mail", "welcome", "abc", Some("tok")),
            expected
        );
    }

    #[test]
    fn parts_can_not_be_shifted_into_each_other() {
        assert_ne!(
            delivery_key("ab", "c", "h", None),
            delivery_key("a", "bc", "h", None)
        );
    }
}
