//! `keygate healthcheck`: a container health probe. Distroless images have no shell or
//! curl, so the binary probes itself.

use std::time::Duration;

use anyhow::Context;

use super::Refused;

/// 200 → exit 0; anything else, or no answer within `timeout` → exit 1. Docker reads
/// exit 1 as "unhealthy" and reserves 2, so every failure here is a [`Refused`].
pub(crate) fn run(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let client = reqwest::blocking::Client::builder()
        .timeout(timeout)
        .build()
        .context("building the HTTP client")?;
    match client.get(url).send() {
        Ok(r) if r.status() == reqwest::StatusCode::OK => Ok(()),
        Ok(r) => Err(Refused(format!("unhealthy: {url} answered {}", r.status())).into()),
        Err(e) => Err(Refused(format!("unhealthy: {:#}", anyhow::Error::new(e))).into()),
    }
}
