//! Password hashes (argon2id and bcrypt) and their verification off the async workers.
//!
//! Hashing a password is slow by design: an argon2id check with the OWASP parameters
//! takes tens of milliseconds of one core and 19 MiB of memory. [`PasswordVerifier`] runs
//! those checks on `concurrency` threads of its own, and refuses outright once
//! `max_waiting` checks are queued, so a login storm costs a bounded amount of CPU and
//! memory and never stalls token verification on the async workers. On Linux the hashing
//! threads run at a lower priority ([`HASHING_NICE`]): when the machine is busy, the
//! scheduler gives the request workers the CPU first, and a flood of wrong passwords slows
//! other logins rather than every request.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Argon2, Params, PasswordVerifier as _};
use tokio::sync::Semaphore;

use crate::bounds::{ARGON2_MAX_M_COST, ARGON2_MAX_P_COST, ARGON2_MAX_T_COST, BCRYPT_MAX_COST};
use crate::error::{CredentialError, Error, KeyError, Result, SigningError};

/// bcrypt reads only the first 72 bytes; longer passwords are refused, never truncated.
pub const BCRYPT_MAX_PASSWORD: usize = 72;
/// Longest password accepted by any scheme (bounds the work an attacker can ask for).
pub const MAX_PASSWORD: usize = 1024;
/// OWASP's argon2id rows (m=47104/t=1 … m=7168/t=5) all spend at least this much m·t.
const ARGON2_MIN_M_T: u64 = 7168 * 5;

/// A stored password hash: argon2id in PHC form, or bcrypt as passlib writes it.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// `$argon2id$v=19$m=…,t=…,p=…$salt$hash`
    Argon2id(String),
    /// `$2a$`, `$2b$` or `$2y$` with cost ≥ 10.
    Bcrypt(String),
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordHash::Argon2id(_) => f.write_str("PasswordHash::Argon2id(..)"),
            PasswordHash::Bcrypt(_) => f.write_str("PasswordHash::Bcrypt(..)"),
        }
    }
}

impl FromStr for PasswordHash {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        if !s.is_ascii() {
            // bcrypt 0.19.0–0.19.1 panicked on multi-byte input (RUSTSEC-2026-0199); no
            // valid hash of either kind has any.
            return Err(KeyError::BadHash("hash contains non-ASCII characters").into());
        }
        if s.starts_with("$argon2") {
            let parsed = argon2::PasswordHash::new(s).map_err(malformed_argon2("hash"))?;
            if parsed.algorithm.as_str() != "argon2id" {
                return Err(KeyError::Argon2Variant(parsed.algorithm.to_string()).into());
            }
            // Read here before argon2 reads them: its check `m < 8·p` overflows on a huge `p`
            // (a panic where overflow checks are on), and a parameter
            // given twice would leave it unclear which one argon2 uses.
            let mut seen = Vec::with_capacity(4);
            for (name, value) in parsed.params.iter() {
                if seen.contains(&name.as_str()) {
                    return Err(KeyError::Argon2RepeatedParameter(name.to_string()).into());
                }
                seen.push(name.as_str());
                if name.as_str() == "p"
                    && let Ok(p) = value.decimal()
                    && p > ARGON2_MAX_P_COST
                {
                    return Err(KeyError::Argon2Parallelism(p).into());
                }
            }
            let params = Params::try_from(&parsed).map_err(malformed_argon2("parameters"))?;
            if params.m_cost() > ARGON2_MAX_M_COST {
                return Err(KeyError::Argon2Memory(params.m_cost()).into());
            }
            // (`p` was bounded above, before argon2 read it.)
            if params.t_cost() > ARGON2_MAX_T_COST {
                return Err(KeyError::Argon2Iterations(params.t_cost()).into());
            }
            if u64::from(params.m_cost()) * u64::from(params.t_cost()) < ARGON2_MIN_M_T {
                return Err(KeyError::Argon2TooWeak {
                    m: params.m_cost(),
                    t: params.t_cost(),
                }
                .into());
            }
            if parsed.hash.is_none() || parsed.salt.is_none() {
                return Err(KeyError::BadHash("argon2 hash lacks its salt or output").into());
            }
            return Ok(PasswordHash::Argon2id(s.to_owned()));
        }
        if let Some(rest) = ["$2a$", "$2b$", "$2y$"]
            .iter()
            .find_map(|p| s.strip_prefix(p))
        {
            let cost: u32 = rest
                .get(..2)
                .and_then(|c| c.parse().ok())
                .ok_or(KeyError::BadHash("malformed bcrypt cost"))?;
            let body = &rest[2..];
            let alphabet_ok = body
                .strip_prefix('$')
                .is_some_and(|b| b.len() == 53 && b.bytes().all(is_bcrypt_char));
            if !alphabet_ok {
                return Err(KeyError::BadHash("malformed bcrypt hash").into());
            }
            if !(10..=BCRYPT_MAX_COST).contains(&cost) {
                return Err(KeyError::BcryptCost(cost).into());
            }
            return Ok(PasswordHash::Bcrypt(s.to_owned()));
        }
        Err(
            KeyError::BadHash("unknown hash format (expected sha256:<hex>, $argon2id$… or $2b$…)")
                .into(),
        )
    }
}

/// An argon2 hash or its parameters (`what`) that the argon2 library refused to read.
fn malformed_argon2(what: &'static str) -> impl Fn(argon2::password_hash::Error) -> KeyError {
    move |source| KeyError::Argon2 { what, source }
}

fn is_bcrypt_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'/'
}

impl PasswordHash {
    /// The PHC / modular-crypt string, for writing back to configuration.
    pub fn as_str(&self) -> &str {
        match self {
            PasswordHash::Argon2id(s) | PasswordHash::Bcrypt(s) => s,
        }
    }

    /// Checks `password` here and now, on the calling thread. Async code uses
    /// [`PasswordVerifier::verify`] instead.
    pub fn verify_blocking(&self, password: &[u8]) -> Result<()> {
        if password.len() > MAX_PASSWORD {
            return Err(Error::Credential(CredentialError::PasswordTooLong(
                MAX_PASSWORD,
            )));
        }
        // The variants are public, so a hash may have been built without `parse`: its bounds
        // (memory, iterations, parallelism, bcrypt cost) are checked again here, where they
        // matter. Against one hashing, a parse costs nothing.
        if self.as_str().parse::<PasswordHash>().ok().as_ref() != Some(self) {
            return Err(
                KeyError::BadHash("not a hash keygate accepts (built without parsing?)").into(),
            );
        }
        let ok = match self {
            PasswordHash::Argon2id(s) => {
                let parsed = argon2::PasswordHash::new(s).map_err(malformed_argon2("hash"))?;
                Argon2::default().verify_password(password, &parsed).is_ok()
            }
            PasswordHash::Bcrypt(s) => {
                if password.len() > BCRYPT_MAX_PASSWORD {
                    return Err(Error::Credential(CredentialError::PasswordTooLong(
                        BCRYPT_MAX_PASSWORD,
                    )));
                }
                bcrypt::verify(password, s).unwrap_or(false)
            }
        };
        if ok {
            Ok(())
        } else {
            Err(Error::Credential(CredentialError::Wrong))
        }
    }
}

/// Hashes a password with argon2id at OWASP's recommended minimum (m=19456 KiB, t=2, p=1).
pub fn hash_password(password: &[u8]) -> Result<PasswordHash> {
    if password.len() > MAX_PASSWORD {
        return Err(Error::Credential(CredentialError::PasswordTooLong(
            MAX_PASSWORD,
        )));
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(Error::Random)?;
    let salt = SaltString::encode_b64(&salt).map_err(SigningError::HashPassword)?;
    let params =
        Params::new(19456, 2, 1, None).map_err(|e| SigningError::HashPassword(e.into()))?;
    let hasher = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let phc = hasher
        .hash_password(password, &salt)
        .map_err(SigningError::HashPassword)?
        .to_string();
    Ok(PasswordHash::Argon2id(phc))
}

/// The nice value of the hashing threads (Linux; 0 is the default, 19 the lowest). At
/// 10 the scheduler weighs a hashing thread about a tenth of a request worker: two
/// threads busy hashing leave the workers over 80 % of a shared core, and hashing still
/// gets its share.
pub const HASHING_NICE: i32 = 10;

/// A check handed to a hashing thread.
type Job = Box<dyn FnOnce() + Send>;

/// The hashing threads: they take jobs from one queue and exit when the last
/// [`PasswordVerifier`] sharing them is dropped.
struct Pool {
    jobs: mpsc::Sender<Job>,
}

impl Pool {
    fn new(threads: usize) -> Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for _ in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name("keygate-hash".into())
                .spawn(move || {
                    lower_priority();
                    loop {
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(poisoned) => poisoned.into_inner().recv(),
                        };
                        let Ok(job) = job else { return };
                        // A panicking check (a bug) fails its caller, not the thread.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                })
                .map_err(Error::ThreadSpawn)?;
        }
        Ok(Self { jobs })
    }

    fn submit(&self, job: Job) -> bool {
        self.jobs.send(job).is_ok()
    }
}

/// Lowers the calling thread's priority to [`HASHING_NICE`]. Raising a nice value needs
/// no privilege; should it fail anyway, hashing runs at the normal priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), HASHING_NICE);
}

/// Verifies passwords on hashing threads of its own, with bounded concurrency and a
/// bounded queue. Cheap to clone.
#[derive(Clone)]
pub struct PasswordVerifier {
    pool: Arc<Pool>,
    permits: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    /// Checked when the principal is unknown, so an unknown name costs what a wrong
    /// password costs (no user enumeration by timing).
    dummy: Arc<PasswordHash>,
}

impl fmt::Debug for PasswordVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordVerifier")
            .field("available", &self.permits.available_permits())
            .field("waiting", &self.waiting.load(Ordering::Relaxed))
            .field("max_waiting", &self.max_waiting)
            .finish()
    }
}

impl PasswordVerifier {
    /// At most `concurrency` hashes at once; more than `max_waiting` queued → [`CredentialError::HashingBusy`].
    pub fn new(concurrency: usize, max_waiting: usize) -> Result<Self> {
        let dummy = hash_password(b"keygate dummy password for unknown principals")?;
        Ok(Self {
            pool: Arc::new(Pool::new(concurrency.max(1))?),
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            waiting: Arc::new(AtomicUsize::new(0)),
            max_waiting,
            dummy: Arc::new(dummy),
        })
    }

    /// Checks `password` against `hash`, or against a dummy hash when `hash` is `None`
    /// (then always [`CredentialError::Wrong`]).
    pub async fn verify(&self, hash: Option<&PasswordHash>, password: &[u8]) -> Result<()> {
        match hash {
            Some(h) => self.run(h.clone(), true, password).await,
            None => self.run((*self.dummy).clone(), false, password).await,
        }
    }

    /// Spends exactly what checking `password` against `stand_in` costs, then refuses:
    /// for an unknown name, with a real user's hash as `stand_in`, so the answer takes as
    /// long as for a known name whatever scheme and cost its hash uses.
    pub async fn verify_unknown(&self, stand_in: &PasswordHash, password: &[u8]) -> Result<()> {
        self.run(stand_in.clone(), false, password).await
    }

    /// Hashes `password` ([`hash_password`]) on the pool, under the same bound as the
    /// checks: setting passwords can no more starve the async workers than logins can.
    pub async fn hash(&self, password: &[u8]) -> Result<PasswordHash> {
        if password.len() > MAX_PASSWORD {
            return Err(Error::Credential(CredentialError::PasswordTooLong(
                MAX_PASSWORD,
            )));
        }
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Credential(CredentialError::HashingBusy))?;
        let password = password.to_vec();
        let (done, outcome) = tokio::sync::oneshot::channel();
        let submitted = self.pool.submit(Box::new(move || {
            let _permit = permit;
            let _ = done.send(hash_password(&password));
        }));
        if !submitted {
            return Err(Error::Credential(CredentialError::HashingBusy));
        }
        outcome
            .await
            .map_err(|_| Error::Credential(CredentialError::HashingBusy))?
    }

    async fn run(&self, hash: PasswordHash, known: bool, password: &[u8]) -> Result<()> {
        if password.len() > MAX_PASSWORD {
            return Err(Error::Credential(CredentialError::PasswordTooLong(
                MAX_PASSWORD,
            )));
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::Credential(CredentialError::HashingBusy));
        }
        let permit = self.permits.clone().acquire_owned().await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        let permit = permit.map_err(|_| Error::Credential(CredentialError::HashingBusy))?;
        let password = password.to_vec();
        let (done, outcome) = tokio::sync::oneshot::channel();
        let submitted = self.pool.submit(Box::new(move || {
            let _permit = permit;
            let _ = done.send(hash.verify_blocking(&password));
        }));
        if !submitted {
            return Err(Error::Credential(CredentialError::HashingBusy));
        }
        let outcome = outcome
            .await
            .map_err(|_| Error::Credential(CredentialError::HashingBusy))?;
        match outcome {
            Ok(()) if known => Ok(()),
            Ok(()) | Err(Error::Credential(CredentialError::PasswordTooLong(_))) if !known => {
                Err(Error::Credential(CredentialError::Wrong))
            }
            Ok(()) => Err(Error::Credential(CredentialError::Wrong)),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The shape passlib's CryptContext(schemes=["bcrypt"]) writes: `$2b$`, cost 12.
    const PASSLIB_BCRYPT: &str = "$2b$12$EixZaYVK1fsbw1ZfbX3OXePaWxn96p36WQoeG6Lruj3vjPGga31lW";

    /// The nice value in a `/proc/…/stat` line: field 19, counted after the command name,
    /// which ends at the last `)`.
    #[cfg(target_os = "linux")]
    fn nice_in(stat: &str) -> i32 {
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        rest.split(' ').nth(16).unwrap().parse().unwrap()
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_runs_on_threads_of_lower_priority() {
        let verifier = PasswordVerifier::new(3, 10).unwrap();
        let hash = hash_password(b"pw").unwrap();
        verifier.verify(Some(&hash), b"pw").await.unwrap();
        let mut hashing = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let dir = task.unwrap().path();
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            if comm.trim() == "keygate-hash" {
                hashing.push(nice_in(&std::fs::read_to_string(dir.join("stat")).unwrap()));
            }
        }
        assert!(hashing.len() >= 3, "{hashing:?}");
        assert!(hashing.iter().all(|n| *n == HASHING_NICE), "{hashing:?}");
        let own = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        assert_eq!(nice_in(&own), 0, "the caller's thread keeps its priority");
    }

    #[test]
    fn argon2id_round_trip() {
        let hash = hash_password(b"correct horse").unwrap();
        assert!(hash.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        let parsed: PasswordHash = hash.as_str().parse().unwrap();
        parsed.verify_blocking(b"correct horse").unwrap();
        assert!(matches!(
            parsed.verify_blocking(b"correct horsE"),
            Err(Error::Credential(CredentialError::Wrong))
        ));
    }

    #[test]
    fn passlib_bcrypt_hash_verifies() {
        let hash: PasswordHash = PASSLIB_BCRYPT.parse().unwrap();
        let fresh = bcrypt::hash("secret", 10).unwrap();
        let fresh: PasswordHash = fresh.parse().unwrap();
        fresh.verify_blocking(b"secret").unwrap();
        assert!(fresh.verify_blocking(b"Secret").is_err());
        assert!(matches!(hash, PasswordHash::Bcrypt(_)));
    }

    #[test]
    fn bcrypt_refuses_passwords_over_72_bytes_instead_of_truncating() {
        let long = "a".repeat(72);
        let hash: PasswordHash = bcrypt::hash(&long, 10).unwrap().parse().unwrap();
        hash.verify_blocking(long.as_bytes()).unwrap();
        let longer = format!("{long}b");
        assert!(matches!(
            hash.verify_blocking(longer.as_bytes()),
            Err(Error::Credential(CredentialError::PasswordTooLong(72)))
        ));
    }

    #[test]
    fn a_hash_built_without_parsing_is_held_to_the_same_bounds() {
        for (hash, what) in [
            // 4 TiB of memory: argon2 would try to allocate it.
            (
                PasswordHash::Argon2id(
                    "$argon2id$v=19$m=4294967295,t=2,p=1$c29tZXNhbHQ$aGFzaA".into(),
                ),
                "huge m",
            ),
            // Overflows argon2's own m < 8p check.
            (
                PasswordHash::Argon2id(
                    "$argon2id$v=19$m=19456,t=2,p=1999999999$c29tZXNhbHQ$aGFzaA".into(),
                ),
                "huge p",
            ),
            (
                PasswordHash::Bcrypt(hash_password(b"pw").unwrap().as_str().to_owned()),
                "argon2 text as bcrypt",
            ),
        ] {
            assert!(
                hash.verify_blocking(b"pw")
                    .is_err_and(|e| e.reason() == "bad_hash"),
                "{what}"
            );
        }
    }

    #[test]
    fn nul_byte_is_part_of_the_password() {
        let hash = hash_password(b"pass\0word").unwrap();
        assert!(hash.verify_blocking(b"pass").is_err());
        hash.verify_blocking(b"pass\0word").unwrap();
    }

    #[test]
    fn malformed_and_weak_hashes_are_refused() {
        for bad in [
            "",
            "plain",
            "$argon2id$v=19$m=1,t=1,p=1$c29tZXNhbHQ$aGFzaA",
            "$argon2id$v=19$m=4294967295,t=2,p=1$c29tZXNhbHQ$aGFzaA",
            "$argon2id$v=19$m=19456,t=2,p=1999999999$c29tZXNhbHQ$aGFzaA",
            "$argon2id$p=1999999999$CFXPJd9Wx$2oYXn3ap6FWQzA",
            "$argon2id$p=8,keyid=,data=dA,p=888888887",
            "$argon2id$v=19$m=19456,t=2,p=1,p=1999999999$c29tZXNhbHQ$aGFzaA",
            "$argon2id$v=19$m=19456,t=2,t=1,p=1$c29tZXNhbHQ$aGFzaA",
            "$argon2i$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
            "$argon2id$garbage",
            "$2b$04$EixZaYVK1fsbw1ZfbX3OXePaWxn96p36WQoeG6Lruj3vjPGga31lW",
            "$2b$12$EixZaYVK1fsbw1ZfbX3OXePaWxn96p36WQoeG6Lruj3vjPGga31l",
            "$2b$12$EixZaYVK1fsbw1ZfbX3OXéPaWxn96p36WQoeG6Lruj3vjPGga31l",
            "$2x$12$EixZaYVK1fsbw1ZfbX3OXePaWxn96p36WQoeG6Lruj3vjPGga31lW",
        ] {
            assert!(bad.parse::<PasswordHash>().is_err(), "{bad}");
        }
    }

    /// docs/security.md: a hash whose check would take over a second is refused at load, so a
    /// configuration cannot stall the hashing threads (`t=100000` is one such hash).
    #[test]
    fn hashes_costing_over_a_second_are_refused() {
        let salt_and_output = "c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
        let argon = |params: &str| format!("$argon2id$v=19${params}${salt_and_output}");
        for params in [
            "m=19456,t=100000,p=1",
            "m=19456,t=11,p=1",
            "m=19456,t=2,p=17",
            "m=1048577,t=2,p=1",
        ] {
            let err = argon(params).parse::<PasswordHash>().unwrap_err();
            assert_eq!(err.reason(), "bad_hash", "{params}: {err}");
        }
        for params in ["m=19456,t=10,p=16", "m=1048576,t=2,p=1"] {
            assert!(argon(params).parse::<PasswordHash>().is_ok(), "{params}");
        }
        let bcrypt = |cost: &str| {
            format!("$2b${cost}$EixZaYVK1fsbw1ZfbX3OXePaWxn96p36WQoeG6Lruj3vjPGga31lW")
        };
        assert!(bcrypt("16").parse::<PasswordHash>().is_ok());
        for cost in ["17", "31"] {
            assert!(bcrypt(cost).parse::<PasswordHash>().is_err(), "{cost}");
        }
    }

    #[tokio::test]
    async fn an_unknown_name_checked_against_a_stand_in_is_always_refused() {
        let verifier = PasswordVerifier::new(1, 8).unwrap();
        let stand_in = hash_password(b"the-real-users-password").unwrap();
        for guess in [&b"the-real-users-password"[..], b"wrong", &[b'a'; 100][..]] {
            assert!(matches!(
                verifier.verify_unknown(&stand_in, guess).await,
                Err(Error::Credential(CredentialError::Wrong))
            ));
        }
    }

    #[test]
    fn debug_output_hides_the_hash() {
        let hash: PasswordHash = PASSLIB_BCRYPT.parse().unwrap();
        assert_eq!(format!("{hash:?}"), "PasswordHash::Bcrypt(..)");
    }

    #[tokio::test]
    async fn unknown_principal_costs_a_hash_and_fails() {
        let verifier = PasswordVerifier::new(2, 8).unwrap();
        assert!(matches!(
            verifier.verify(None, b"anything").await,
            Err(Error::Credential(CredentialError::Wrong))
        ));
        let hash = hash_password(b"pw").unwrap();
        verifier.verify(Some(&hash), b"pw").await.unwrap();
    }

    #[tokio::test]
    async fn a_full_queue_refuses_instead_of_waiting() {
        let verifier = PasswordVerifier::new(1, 0).unwrap();
        assert!(matches!(
            verifier.verify(None, b"x").await,
            Err(Error::Credential(CredentialError::HashingBusy))
        ));
    }
}
