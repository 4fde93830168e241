//! Per-client quotas (README, Quotas): `rate_limit = "N/DURATION"` on a client, or
//! `limits.default_rate_limit`, counted on `/login`, `/token`, and `/verify` and `/userinfo`
//! for the client's tokens.
//!
//! The algorithm is GCRA (the generic cell rate algorithm) with a burst of N: a full quota
//! lets N requests through at once, then one every `DURATION / N`, and a client that pauses
//! earns its quota back at that pace, up to N. One number per client (its theoretical
//! arrival time) is the whole state, so a decision is one compare-and-set: under a mutex
//! here, or one Lua script in Redis (`store/quota.rs`) when `[store] url` is set, so every
//! replica counts against one quota. Without a store, the map holds only configured
//! clients with a quota, and an entry is swept once its bucket is full again.
//!
//! A [`Decision`] says what the IETF httpapi RateLimit header fields of the answer carry:
//! `RateLimit-Policy: "default";q=N;w=SECONDS` and `RateLimit: "default";r=REMAINING;t=SECONDS`,
//! where `t` is the time until the quota is whole again. Charging a request and answering
//! 429 is the request layer's (`charge.rs`); this module holds no HTTP and no server state.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use keygate::principal::{Directory, PrincipalKind};

use crate::config::{ConfigError, LimitsConfig};

/// A quota, `N/DURATION`: N requests per whole number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// N: requests per period, and the burst allowed at once.
    pub limit: u32,
    /// The period: at least 1s, whole seconds (the header fields count in seconds).
    pub period: Duration,
}

/// Why a `rate_limit` setting is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateLimitError {
    /// Not `N/DURATION`.
    #[error("`{0}` is not N/DURATION, like 100/1s or 1000/1m")]
    Malformed(String),
    /// `N` is 0.
    #[error("`{0}`: the limit must be at least 1")]
    ZeroLimit(String),
    /// The duration is under a second or not whole seconds.
    #[error("`{0}`: the duration must be whole seconds, at least 1s")]
    Period(String),
    /// More than one request per microsecond, the GCRA's resolution.
    #[error("`{0}`: more than one request per microsecond")]
    TooFast(String),
}

impl FromStr for RateLimit {
    type Err = RateLimitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || RateLimitError::Malformed(s.to_owned());
        let (n, d) = s.split_once('/').ok_or_else(malformed)?;
        let limit: u32 = n.trim().parse().map_err(|_| malformed())?;
        let period = humantime::parse_duration(d.trim()).map_err(|_| malformed())?;
        if limit == 0 {
            return Err(RateLimitError::ZeroLimit(s.to_owned()));
        }
        if period.as_secs() == 0 || period.subsec_nanos() != 0 {
            return Err(RateLimitError::Period(s.to_owned()));
        }
        if period.as_micros() < u128::from(limit) {
            return Err(RateLimitError::TooFast(s.to_owned()));
        }
        Ok(Self { limit, period })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}s", self.limit, self.period.as_secs())
    }
}

impl RateLimit {
    /// The GCRA parameters: one request every `period / limit` (rounded down to a whole
    /// microsecond, so never stricter than stated), a burst of `limit`.
    pub fn gcra(self) -> Gcra {
        let period_us = u64::try_from(self.period.as_micros()).unwrap_or(u64::MAX);
        let interval_us = (period_us / u64::from(self.limit)).max(1);
        Gcra {
            interval_us,
            tolerance_us: interval_us * u64::from(self.limit - 1),
        }
    }
}

/// A `rate_limit` setting, parsed; `None` when unset.
pub(crate) fn parse_rate_limit(
    value: Option<&str>,
    setting: impl FnOnce() -> String,
) -> Result<Option<RateLimit>, ConfigError> {
    value
        .map(str::parse::<RateLimit>)
        .transpose()
        .map_err(|e| ConfigError::new(setting(), e))
}

/// The quota of each client that has one: its own `rate_limit`, else
/// `limits.default_rate_limit`. Users (the password grant) have none. Only clients with
/// their own are listed; the default is found through the directory, so that a million
/// clients under the default cost no table at all.
#[derive(Debug, Default)]
pub struct QuotaTable {
    own: HashMap<Box<str>, RateLimit>,
    default: Option<RateLimit>,
    /// Clients with a quota (own or default).
    limited: usize,
}

impl QuotaTable {
    /// The table of `clients` clients, `own` being those with their own `rate_limit`, under
    /// `limits.default_rate_limit`.
    pub(crate) fn new(
        limits: &LimitsConfig,
        own: HashMap<Box<str>, RateLimit>,
        clients: usize,
    ) -> Result<Self, ConfigError> {
        let default = parse_rate_limit(limits.default_rate_limit.as_deref(), || {
            "limits.default_rate_limit".into()
        })?;
        let limited = if default.is_some() {
            clients
        } else {
            own.len()
        };
        Ok(Self {
            own,
            default,
            limited,
        })
    }

    /// The quota of `client_id`, a client of `directory`, if it has one.
    pub fn get(&self, client_id: &str, directory: &Directory) -> Option<RateLimit> {
        if let Some(own) = self.own.get(client_id) {
            return Some(*own);
        }
        let default = self.default?;
        let client = directory.get(client_id)?;
        (client.kind == PrincipalKind::Client).then_some(default)
    }

    /// `limits.default_rate_limit`, the quota of a client without one of its own.
    pub fn default_limit(&self) -> Option<RateLimit> {
        self.default
    }

    /// The number of clients with a quota.
    pub fn len(&self) -> usize {
        self.limited
    }

    /// True when no client has a quota.
    pub fn is_empty(&self) -> bool {
        self.limited == 0
    }
}

/// GCRA with a burst: `interval_us` between requests at the sustained rate, and
/// `tolerance_us` (`interval × (N − 1)`) of debt allowed before a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Microseconds each request adds to the client's debt.
    pub interval_us: u64,
    /// The debt a request may find and still be allowed.
    pub tolerance_us: u64,
}

/// One decision: allowed or not, the debt left (time until the quota is whole again) and,
/// when refused, the wait until one request is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Counted and allowed.
    pub allowed: bool,
    /// Microseconds until the quota is whole again.
    pub debt_us: u64,
    /// Microseconds until one request is allowed (0 when allowed).
    pub wait_us: u64,
}

impl Gcra {
    /// Decides one request at `now_us` for a client whose theoretical arrival time is `tat`
    /// (absent: a full quota); returns the outcome and the new TAT to store when allowed.
    /// `store/quota.rs` runs the same steps in Lua.
    pub fn decide(self, tat: Option<u64>, now_us: u64) -> (Outcome, Option<u64>) {
        let tat = tat.unwrap_or(now_us).max(now_us);
        let debt = tat - now_us;
        if debt > self.tolerance_us {
            let refused = Outcome {
                allowed: false,
                debt_us: debt,
                wait_us: debt - self.tolerance_us,
            };
            return (refused, None);
        }
        let new = tat + self.interval_us;
        let allowed = Outcome {
            allowed: true,
            debt_us: new - now_us,
            wait_us: 0,
        };
        (allowed, Some(new))
    }
}

/// The answer to one counted request: what its RateLimit header fields say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The client's quota.
    pub limit: RateLimit,
    /// What the GCRA decided.
    pub outcome: Outcome,
}

impl Decision {
    /// Requests still allowed at once.
    pub fn remaining(&self) -> u64 {
        let g = self.limit.gcra();
        let capacity = g.interval_us * u64::from(self.limit.limit);
        capacity.saturating_sub(self.outcome.debt_us) / g.interval_us
    }

    /// The time until one request is allowed again (refused requests).
    pub fn retry_after(&self) -> Duration {
        Duration::from_micros(self.outcome.wait_us)
    }

    /// The values of `RateLimit-Policy` and `RateLimit`, in that order.
    pub fn header_values(&self) -> [(&'static str, String); 2] {
        let policy = format!(
            "\"default\";q={};w={}",
            self.limit.limit,
            self.limit.period.as_secs()
        );
        let reset = self.outcome.debt_us.div_ceil(1_000_000);
        let state = format!("\"default\";r={};t={reset}", self.remaining());
        [("ratelimit-policy", policy), ("ratelimit", state)]
    }
}

/// A quota counter every replica shares (Redis: `store::RedisQuota`): one atomic GCRA
/// step. The future is boxed: inline, a store's round trip is a future of kilobytes which
/// every request's future would carry and move, quota or not; one allocation is nothing
/// against a network round trip.
pub trait SharedQuota: fmt::Debug + Send + Sync {
    /// Counts one request of `client_id` against `gcra`; `Err(_)` when the store cannot
    /// answer.
    fn charge<'a>(
        &'a self,
        client_id: &'a str,
        gcra: Gcra,
    ) -> BoxFuture<'a, Result<Outcome, keygate::Error>>;
}

/// The counters: this process's own, and Redis's when `[store] url` is set.
#[derive(Debug)]
pub struct Quotas {
    epoch: Instant,
    local: Mutex<HashMap<Box<str>, u64, foldhash::fast::RandomState>>,
    shared: Option<Box<dyn SharedQuota>>,
}

impl Quotas {
    /// Counters in this process; with `shared`, in a shared store (this process's own then
    /// answer only while the store cannot be reached and `store.on_unavailable = "allow"`).
    pub fn new(shared: Option<Box<dyn SharedQuota>>) -> Self {
        Self {
            epoch: Instant::now(),
            local: Mutex::new(HashMap::default()),
            shared,
        }
    }

    /// The shared counter, when `[store] url` is set.
    pub fn shared(&self) -> Option<&dyn SharedQuota> {
        self.shared.as_deref()
    }

    /// Decides and counts one request of `client_id` in this process. `clients` bounds the
    /// map: past it, entries whose quota is whole again are swept.
    pub fn charge_locally(&self, client_id: &str, limit: RateLimit, clients: usize) -> Outcome {
        let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.charge_at(client_id, limit, clients, now)
    }

    fn charge_at(&self, client_id: &str, limit: RateLimit, clients: usize, now: u64) -> Outcome {
        let mut map = self
            .local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A client already counted is updated in place: no key copied per request.
        if let Some(tat) = map.get_mut(client_id) {
            let (outcome, new_tat) = limit.gcra().decide(Some(*tat), now);
            if let Some(new_tat) = new_tat {
                *tat = new_tat;
            }
            return outcome;
        }
        let (outcome, new_tat) = limit.gcra().decide(None, now);
        if let Some(tat) = new_tat {
            if map.len() >= clients {
                map.retain(|_, tat| *tat > now);
            }
            map.insert(client_id.into(), tat);
        }
        outcome
    }

    /// Entries held in this process (for the bound's test).
    #[cfg(test)]
    fn local_entries(&self) -> usize {
        self.local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_parse_or_say_why_not() {
        assert_eq!(
            "100/1s".parse::<RateLimit>(),
            Ok(RateLimit {
                limit: 100,
                period: Duration::from_secs(1)
            })
        );
        assert_eq!(
            "50 / 1m".parse::<RateLimit>().unwrap().period,
            Duration::from_secs(60)
        );
        for bad in [
            "0/1s",
            "10/0s",
            "10/1500ms",
            "10",
            "ten/1s",
            "10/soon",
            "-1/1s",
            "",
        ] {
            assert!(bad.parse::<RateLimit>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_full_quota_allows_a_burst_of_n_then_one_per_interval() {
        let g = RateLimit {
            limit: 3,
            period: Duration::from_secs(3),
        }
        .gcra();
        let mut tat = None;
        for _ in 0..3 {
            let (o, new) = g.decide(tat, 10);
            assert!(o.allowed);
            tat = new;
        }
        let (refused, none) = g.decide(tat, 10);
        assert!(!refused.allowed);
        assert_eq!(none, None);
        assert_eq!(refused.wait_us, 1_000_000);
        assert_eq!(refused.debt_us, 3_000_000);
        // One interval later, exactly one more.
        let (o, new) = g.decide(tat, 1_000_010);
        assert!(o.allowed);
        assert!(!g.decide(new, 1_000_010).0.allowed);
    }

    #[test]
    fn the_local_map_never_outgrows_the_clients() {
        let q = Quotas::new(None);
        let limit = RateLimit {
            limit: 1,
            period: Duration::from_secs(1),
        };
        assert!(q.charge_at("a", limit, 1, 0).allowed);
        assert!(q.charge_at("b", limit, 1, 10).allowed);
        assert_eq!(q.local_entries(), 2, "a's bucket is not whole yet: kept");
        assert!(q.charge_at("c", limit, 2, 1_000_020).allowed);
        assert_eq!(q.local_entries(), 1, "whole buckets are swept, not kept");
    }
}
