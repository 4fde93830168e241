//! Request ids: every request runs inside a `request` span carrying `request_id`, so each
//! log line it causes names it, and the response echoes it in `X-Request-Id`.
//!
//! The id is the caller's `X-Request-Id` when it is sane (what a proxy such as nginx's
//! `$request_id` or a load balancer set, so one id follows the request across services),
//! else 32 hex digits (a random per-process prefix and a counter), the shape nginx uses.

use axum::http::{HeaderMap, HeaderName, HeaderValue};

/// The header read from requests and set on every response.
pub(crate) const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest id taken from a request; longer ones are replaced, so a client cannot make
/// every log line of its request arbitrarily large.
pub(crate) const MAX_LEN: usize = 128;

/// Whether a caller's id is kept: 1–128 characters a log line and a header carry
/// verbatim (UUIDs, hex, base64, `Root=1-…;Parent=…` trace ids). Anything else (spaces,
/// quotes, control characters that could forge a log line) is replaced by a fresh id.
fn is_sane(id: &str) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:;=+/@".contains(&b))
}

fn generate() -> HeaderValue {
    // The id correlates log lines; it protects nothing. A random prefix per process and a
    // counter make ids unique across replicas and restarts without a system call per
    // request (this runs on every request of the hot path).
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let mut bytes = [0u8; 8];
        if getrandom::fill(&mut bytes).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            bytes = (nanos as u64).to_le_bytes();
        }
        u64::from_le_bytes(bytes)
    });
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut id = [0u8; 32];
    let whole = (u128::from(prefix) << 64) | u128::from(n);
    for (i, digit) in id.iter_mut().enumerate() {
        *digit = b"0123456789abcdef"[((whole >> (124 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&id).expect("hex digits are a valid header value")
}

/// The id of a request: the caller's `X-Request-Id` when it is sane, else a fresh one.
pub(crate) fn pick(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(HEADER)
        .filter(|v| v.to_str().is_ok_and(is_sane))
        .cloned()
        .unwrap_or_else(generate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_id_shapes_are_kept() {
        for id in [
            "f3b1c2d4e5f60718293a4b5c6d7e8f90",
            "123e4567-e89b-12d3-a456-426614174000",
            "Root=1-67891233-abcdef012345678912345678;Parent=53995c3f42cd8ad8",
            "dGVzdA==",
        ] {
            assert!(is_sane(id), "{id}");
        }
    }

    #[test]
    fn empty_long_or_log_forging_ids_are_replaced() {
        let long = "a".repeat(MAX_LEN + 1);
        for id in ["", long.as_str(), "a b", "x\"y", "line\nbreak", "é"] {
            assert!(!is_sane(id), "{id:?}");
        }
        assert!(is_sane(&"a".repeat(MAX_LEN)));
    }

    #[test]
    fn generated_ids_are_32_hex_digits_and_distinct() {
        let (a, b) = (generate(), generate());
        assert_eq!(a.len(), 32);
        assert!(a.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_ne!(a, b);
    }
}
