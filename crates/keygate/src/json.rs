//! JSON written by hand where it is written on every request: a token's claims and the
//! token response. The output is serde_json's, byte for byte (tests below), without its
//! per-byte escape scan over strings that need no escaping — which nearly all do not: a
//! token is base64url and dots, ids and scopes are printable ASCII.

/// Appends `s` as a JSON string (quoted, escaped exactly as serde_json escapes).
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        // Rare (a configured value with a quote, a backslash or a control character):
        // serde_json's own escaping. Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
        return;
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// Appends `n` in decimal.
pub fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// True when any byte must be escaped in a JSON string (RFC 8259 §7: `"`, `\` and the
/// control characters below U+0020). No early exit, so the loop compiles to vector
/// instructions over 16 or 32 bytes at a time.
fn needs_escape(bytes: &[u8]) -> bool {
    bytes.iter().fold(false, |any, &b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        let cases = [
            "",
            "plain",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln",
            "a \"quoted\" word",
            "back\\slash",
            "new\nline\ttab\u{1}\u{1f}",
            "\u{7f} del, é, ✓, \u{2028}",
            &"x".repeat(1000),
            &format!("{}\"", "y".repeat(63)),
        ];
        for s in cases {
            let mut ours = Vec::new();
            push_str(&mut ours, s);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(s).unwrap(),
                "{s:?}"
            );
        }
    }

    #[test]
    fn numbers_are_decimal() {
        for n in [0, 7, 1800, 1_796_610_635, u64::MAX] {
            let mut ours = Vec::new();
            push_u64(&mut ours, n);
            assert_eq!(ours, n.to_string().into_bytes());
        }
    }
}
