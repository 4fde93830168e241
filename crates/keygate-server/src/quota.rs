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
//! Answers counted against a quota carry the IETF httpapi RateLimit header fields:
//! `RateLimit-Policy: "default";q=N;w=SECONDS` and `RateLimit: "default";r=REMAINING;t=SECONDS`,
//! where `t` is the time until the quota is whole again. Over quota: 429 `rate_limited`
//! with `Retry-After`, the time until one request is allowed again.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue};

use keygate::principal::{Directory, PrincipalKind};

use crate::audit::{AuditEvent, AuditKind};
use crate::config::{ConfigError, LimitsConfig, OnUnavailable, Runtime};
use crate::rejection::Rejection;
use crate::state::AppState;
use crate::store::RedisQuota;

/// A quota, `N/DURATION`: N requests per whole number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// N: requests per period, and the burst allowed at once.
    pub limit: u32,
    /// The period: at least 1s, whole seconds (the header fields count in seconds).
    pub period: Duration,
}

impl FromStr for RateLimit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || format!("`{s}` is not N/DURATION, like 100/1s or 1000/1m");
        let (n, d) = s.split_once('/').ok_or_else(malformed)?;
        let limit: u32 = n.trim().parse().map_err(|_| malformed())?;
        let period = humantime::parse_duration(d.trim()).map_err(|_| malformed())?;
        if limit == 0 {
            return Err(format!("`{s}`: the limit must be at least 1"));
        }
        if period.as_secs() == 0 || period.subsec_nanos() != 0 {
            return Err(format!(
                "`{s}`: the duration must be whole seconds, at least 1s"
            ));
        }
        if period.as_micros() < u128::from(limit) {
            return Err(format!("`{s}`: more than one request per microsecond"));
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
    limit: RateLimit,
    outcome: Outcome,
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

    /// Sets `RateLimit-Policy` and `RateLimit`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        let policy = format!(
            "\"default\";q={};w={}",
            self.limit.limit,
            self.limit.period.as_secs()
        );
        let reset = self.outcome.debt_us.div_ceil(1_000_000);
        let state = format!("\"default\";r={};t={reset}", self.remaining());
        for (name, value) in [("ratelimit-policy", policy), ("ratelimit", state)] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
    }
}

/// The counters: this process's own, and Redis's when `[store] url` is set.
#[derive(Debug)]
pub struct Quotas {
    epoch: Instant,
    local: Mutex<HashMap<String, u64>>,
    shared: Option<RedisQuota>,
}

impl Quotas {
    /// Counters in this process; with `shared`, in Redis (this process's own then answer
    /// only while Redis cannot be reached and `store.on_unavailable = "allow"`).
    pub fn new(shared: Option<RedisQuota>) -> Self {
        Self {
            epoch: Instant::now(),
            local: Mutex::new(HashMap::new()),
            shared,
        }
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
        let (outcome, new_tat) = limit.gcra().decide(map.get(client_id).copied(), now);
        if let Some(tat) = new_tat {
            if !map.contains_key(client_id) && map.len() >= clients {
                map.retain(|_, tat| *tat > now);
            }
            map.insert(client_id.to_owned(), tat);
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

/// Counts one request of `client_id` against its quota. `Ok(None)`: the client has none.
/// Over quota: 429 `rate_limited` carrying the header fields. Redis unreachable:
/// `store.on_unavailable` decides (deny: 503; allow: this replica's own counters).
pub(crate) async fn charge(
    state: &AppState,
    rt: &Runtime,
    client_id: &str,
    route: &'static str,
    ip: Option<std::net::IpAddr>,
    jti: Option<&str>,
) -> Result<Option<Decision>, Rejection> {
    let Some(limit) = rt.client_quota(client_id) else {
        return Ok(None);
    };
    let quotas = state.quotas();
    let outcome = match &quotas.shared {
        None => quotas.charge_locally(client_id, limit, rt.quotas.len()),
        // Boxed: the store's round trip is a future of kilobytes which, inline, every
        // request's future would carry and move, quota or not. One allocation is nothing
        // against a network round trip.
        Some(redis) => match Box::pin(redis.charge(client_id, limit.gcra())).await {
            Ok(outcome) => outcome,
            Err(e) if rt.config.store.on_unavailable == OnUnavailable::Allow => {
                tracing::warn!(error = %keygate::error::chain(&e), "quota store unavailable; counting on this replica (store.on_unavailable = allow)");
                quotas.charge_locally(client_id, limit, rt.quotas.len())
            }
            Err(e) => {
                tracing::error!(error = %keygate::error::chain(&e), "quota store unavailable; refusing (store.on_unavailable = deny)");
                return Err(Rejection::Unavailable(Duration::from_secs(1)));
            }
        },
    };
    let decision = Decision { limit, outcome };
    if outcome.allowed {
        Ok(Some(decision))
    } else {
        metrics::counter!("keygate_quota_refused_total", "route" => route).increment(1);
        let mut event = AuditEvent::new(AuditKind::TokenRefused)
            .client_id(client_id)
            .address(ip)
            .reason("rate_limited");
        if let Some(jti) = jti {
            event = event.jti(jti);
        }
        state.audit().record(&event);
        Err(Rejection::RateLimited(Box::new(decision)))
    }
}

/// Sets the header fields of `decision` (if any) on an answer, whether it succeeded or not.
pub(crate) fn with_headers(
    decision: Option<&Decision>,
    mut response: axum::response::Response,
) -> axum::response::Response {
    if let Some(d) = decision {
        d.apply(response.headers_mut());
    }
    response
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
    fn headers_count_what_is_left_and_when_it_is_whole() {
        let limit = RateLimit {
            limit: 50,
            period: Duration::from_secs(60),
        };
        let (outcome, _) = limit.gcra().decide(None, 1);
        let d = Decision { limit, outcome };
        let mut h = HeaderMap::new();
        d.apply(&mut h);
        assert_eq!(h["ratelimit-policy"], "\"default\";q=50;w=60");
        assert_eq!(h["ratelimit"], "\"default\";r=49;t=2");
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
