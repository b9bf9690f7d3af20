//! Header lines within RFC 5322's hard limit of 998 characters.
//!
//! Folding (a line break before whitespace) is the usual way to shorten a header line, but a
//! value with a run longer than a line and no whitespace in it (a token, a long URL-like
//! identifier, a subject without spaces) has nowhere to fold. Encoded-words (RFC 2047) can
//! split such a value anywhere: the whitespace between two encoded-words is dropped when a
//! reader decodes them, so the value unfolds and decodes to exactly the original.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// RFC 5322 2.1.1: a line MUST be at most 998 characters, CRLF not counted.
pub const MAX_LINE: usize = 998;

/// UTF-8 bytes per encoded-word: 45 bytes are 60 base64 characters, so a word
/// (`=?utf-8?b?` + 60 + `?=`) is 72 characters, within RFC 2047's 75.
const CHUNK_BYTES: usize = 45;

/// Whether `Name: value`, folded only at spaces, would still have a line over
/// [`MAX_LINE`]: some space-free run does not fit a line even when it starts one.
pub fn has_unfoldable_run(name: &str, value: &str) -> bool {
    let first_line_prefix = name.len() + ": ".len();
    value
        .split(' ')
        // A run that is not the first may start a continuation line, after one space; the
        // first one follows the name. Count the longer prefix for both: simpler, and safe.
        .any(|run| first_line_prefix + run.len() + 1 > MAX_LINE)
}

/// The value as a folded sequence of base64 encoded-words (RFC 2047), split only between
/// characters, one encoded-word per line.
pub fn encoded_words(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 2);
    let mut chunk_start = 0;
    let mut chunk_end = 0;
    let push = |chunk: &str, out: &mut String| {
        if !out.is_empty() {
            out.push_str("\r\n ");
        }
        out.push_str("=?utf-8?b?");
        out.push_str(&STANDARD.encode(chunk));
        out.push_str("?=");
    };
    for (at, c) in value.char_indices() {
        if at + c.len_utf8() - chunk_start > CHUNK_BYTES {
            push(&value[chunk_start..chunk_end], &mut out);
            chunk_start = at;
        }
        chunk_end = at + c.len_utf8();
    }
    if chunk_end > chunk_start || out.is_empty() {
        push(&value[chunk_start..chunk_end], &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unfolds and decodes, the way a reader does: whitespace between encoded-words drops.
    fn decode(encoded: &str) -> String {
        let bytes: Vec<u8> = encoded
            .split("\r\n ")
            .flat_map(|word| {
                let b64 = word
                    .strip_prefix("=?utf-8?b?")
                    .and_then(|w| w.strip_suffix("?="))
                    .expect("an encoded-word");
                STANDARD.decode(b64).expect("base64")
            })
            .collect();
        String::from_utf8(bytes).expect("whole characters in every word")
    }

    #[test]
    fn encoded_words_split_between_characters_and_decode_to_the_original() {
        for value in [
            "x".repeat(995),
            "é".repeat(495),
            format!("{}€{}", "a".repeat(44), "b".repeat(900)),
            "ends with spaces   ".to_string(),
            "😀".repeat(300),
            String::new(),
        ] {
            let encoded = encoded_words(&value);
            for line in encoded.split("\r\n") {
                assert!(line.len() <= 76, "{line}");
                assert!(line.trim_start().len() <= 75, "{line}");
            }
            assert_eq!(decode(&encoded), value);
        }
    }

    #[test]
    fn only_runs_too_long_for_a_line_need_encoded_words() {
        assert!(!has_unfoldable_run("Subject", &"word ".repeat(300)));
        assert!(!has_unfoldable_run("X-Id", &"x".repeat(990)));
        assert!(has_unfoldable_run("X-Id", &"x".repeat(992)));
        assert!(has_unfoldable_run(
            "X-Tracking-Token",
            &format!("a b {}", "x".repeat(980))
        ));
    }
}
