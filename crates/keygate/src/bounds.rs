//! The numeric bounds keygate enforces on keys, secrets, tokens, JWKS bodies and password
//! hashes, in one place: the checks use them and [`crate::error`]'s messages quote them.
//! (A leaf module: [`crate::token`] and [`crate::password`] re-export the public ones.)

use std::time::Duration;

/// Longest lifetime (`exp - iat`) a token may have, issued or accepted. A correctly signed
/// token claiming more is refused: after a key leak, a forger cannot mint tokens that
/// outlive the key's rotation by years.
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Shortest HMAC key accepted, in bytes (RFC 7518 §3.2: at least the hash output size).
pub const MIN_SECRET_LEN: usize = 32;

/// Smallest RSA modulus accepted, in bits (RFC 7518 §3.3).
pub(crate) const MIN_RSA_BITS: usize = 2048;

/// Largest JWKS body read. keygate's holds a handful of keys, a few KiB.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Largest argon2 memory cost accepted in a stored hash, in KiB (1 GiB: a guard against
/// a configured hash that would allocate gigabytes per check). With the limits below, no
/// accepted hash costs much over a second to check (docs/security.md).
pub(crate) const ARGON2_MAX_M_COST: u32 = 1024 * 1024;
/// Largest argon2 iteration count accepted (a `t=100000` hash would stall a hashing thread
/// for minutes).
pub(crate) const ARGON2_MAX_T_COST: u32 = 10;
/// Largest argon2 parallelism accepted.
pub(crate) const ARGON2_MAX_P_COST: u32 = 16;
/// Largest bcrypt cost accepted: 2^16 rounds, about a second on one core.
pub(crate) const BCRYPT_MAX_COST: u32 = 16;
