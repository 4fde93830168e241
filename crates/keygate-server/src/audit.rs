//! The audit log (SPEC §10): one JSON line per security event, appended to `[audit] path`.
//!
//! A line has `ts` (RFC 3339, UTC), `event` (one of [`AuditKind`]), and those of
//! `client_id`, `username`, `address`, `jti` and `reason` that apply. Never a key, secret,
//! password or token: an event is built from ids, addresses and fixed reason words only.
//!
//! The server writes off the request path: [`AuditLog::record`] puts the line on a bounded
//! channel (`[audit] buffer`) and returns at once; a writer thread appends it. When the
//! channel is full the event is dropped and counted (`keygate_audit_dropped_total`): a slow
//! disk never delays a request. Each line is one `write` to a file opened for appending, so
//! it reaches the OS at once and lines from the server and the CLI never interleave; the
//! writer `fdatasync`s at most once a second while lines are arriving (a crash of the
//! machine loses at most the last second). SIGHUP reopens the file, for logrotate.
//!
//! The CLI appends its own events with [`append_now`] (synchronously, fsynced per line: it
//! writes one event and exits).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::Config;

/// The security events, a fixed set (also the values of the metric's `event` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    /// A token was issued (`/login`, `/token`).
    TokenIssued,
    /// A credential presented for a token was refused, or a client was over its quota.
    TokenRefused,
    /// A token was revoked (`/logout`, `/revoke`).
    TokenRevoked,
    /// `keygate key add`.
    KeyAdded,
    /// `keygate key rotate`.
    KeyRotated,
    /// `keygate key revoke`.
    KeyRevoked,
    /// `keygate user add`.
    UserAdded,
    /// `keygate user remove`.
    UserRemoved,
    /// A new configuration is in force (file change or SIGHUP).
    ConfigReloaded,
    /// A changed configuration did not validate; the previous one keeps serving.
    ConfigRefused,
}

impl AuditKind {
    /// Every kind, in the order the SPEC lists them.
    pub const ALL: [AuditKind; 10] = [
        AuditKind::TokenIssued,
        AuditKind::TokenRefused,
        AuditKind::TokenRevoked,
        AuditKind::KeyAdded,
        AuditKind::KeyRotated,
        AuditKind::KeyRevoked,
        AuditKind::UserAdded,
        AuditKind::UserRemoved,
        AuditKind::ConfigReloaded,
        AuditKind::ConfigRefused,
    ];

    /// The `event` value: `token.issued`, …
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::TokenIssued => "token.issued",
            AuditKind::TokenRefused => "token.refused",
            AuditKind::TokenRevoked => "token.revoked",
            AuditKind::KeyAdded => "key.added",
            AuditKind::KeyRotated => "key.rotated",
            AuditKind::KeyRevoked => "key.revoked",
            AuditKind::UserAdded => "user.added",
            AuditKind::UserRemoved => "user.removed",
            AuditKind::ConfigReloaded => "config.reloaded",
            AuditKind::ConfigRefused => "config.refused",
        }
    }
}

/// One line of the audit log.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    /// RFC 3339, UTC, when the event was recorded.
    pub ts: String,
    /// What happened.
    pub event: &'static str,
    /// The client concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The user concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The client address of the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// The token's id (never the token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Why: a fixed word (`wrong_credential`, `rate_limited`, `logout`, …) or a setting name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Ids arriving in refused requests are the caller's words: kept short in the log.
const MAX_FIELD: usize = 128;

fn bounded(s: &str) -> String {
    let mut end = s.len().min(MAX_FIELD);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

impl AuditEvent {
    /// An event of `kind`, stamped now.
    pub fn new(kind: AuditKind) -> Self {
        let ts = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_default();
        Self {
            ts,
            event: kind.as_str(),
            client_id: None,
            username: None,
            address: None,
            jti: None,
            reason: None,
        }
    }

    /// Sets `client_id`.
    #[must_use]
    pub fn client_id(mut self, id: &str) -> Self {
        self.client_id = Some(bounded(id));
        self
    }

    /// Sets `username`.
    #[must_use]
    pub fn username(mut self, name: &str) -> Self {
        self.username = Some(bounded(name));
        self
    }

    /// Sets `address`.
    #[must_use]
    pub fn address(mut self, ip: Option<IpAddr>) -> Self {
        self.address = ip;
        self
    }

    /// Sets `jti`.
    #[must_use]
    pub fn jti(mut self, jti: &str) -> Self {
        self.jti = Some(bounded(jti));
        self
    }

    /// Sets `reason`.
    #[must_use]
    pub fn reason(mut self, reason: &str) -> Self {
        self.reason = Some(bounded(reason));
        self
    }

    /// The JSON line, newline included.
    pub fn line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }
}

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `path = "-"`: standard output (server) or standard error (CLI).
    Stdio,
    /// A file, appended to.
    File(PathBuf),
}

/// `[audit] path`, resolved against the configuration file's folder; `None` when off.
pub fn destination(config: &Config) -> Option<Destination> {
    let path = config.audit.path.as_deref()?;
    Some(if path == "-" {
        Destination::Stdio
    } else {
        Destination::File(config.base_dir.join(path))
    })
}

/// Opens for appending; a new file is made mode 0600: the log names clients, users and
/// their addresses.
fn open_append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// Where the configuration file at `config_path` sends audit lines, for the CLI: read with
/// the environment (`${VAR}`, `KEYGATE_AUDIT_PATH`) when the file parses so, else the bare
/// `[audit] path` (an edit must not lose its event to an unset variable elsewhere).
pub fn destination_of_file(config_path: &Path) -> Result<Option<Destination>, String> {
    let text = std::fs::read_to_string(config_path)
        .map_err(|e| format!("{}: {e}", config_path.display()))?;
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let mut config = match Config::parse(&text, &env) {
        Ok(config) => config,
        Err(_) => {
            let table: toml::Table = toml::from_str(&text).map_err(|e| {
                format!(
                    "{}: {}",
                    config_path.display(),
                    crate::config::toml_error(&e)
                )
            })?;
            let mut config = Config::default();
            config.audit.path = table
                .get("audit")
                .and_then(|a| a.get("path"))
                .and_then(|p| p.as_str())
                .map(str::to_owned);
            config
        }
    };
    config.base_dir = config_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    Ok(destination(&config))
}

/// Appends one event now, fsynced (the CLI's way: one event, then exit). `Stdio` is
/// standard error here: the CLI's standard output carries what it prints (a new key).
pub fn append_now(destination: &Destination, event: &AuditEvent) -> std::io::Result<()> {
    match destination {
        Destination::Stdio => std::io::stderr().lock().write_all(event.line().as_bytes()),
        Destination::File(path) => {
            let mut file = open_append(path)?;
            file.write_all(event.line().as_bytes())?;
            file.sync_data()
        }
    }
}

enum Message {
    Line(String),
    Wake,
}

/// The server's audit log: a bounded channel to a writer thread.
#[derive(Debug, Clone)]
pub struct AuditLog {
    sender: Option<SyncSender<Message>>,
    reopen: Arc<AtomicBool>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("audit line")
    }
}

impl AuditLog {
    /// The log `config` asks for, its writer started; off when `[audit] path` is unset.
    /// The file is opened here, so a path that cannot be written stops the start.
    pub fn start(config: &Config) -> std::io::Result<Self> {
        let reopen = Arc::new(AtomicBool::new(false));
        let Some(destination) = destination(config) else {
            return Ok(Self {
                sender: None,
                reopen,
            });
        };
        let file = match &destination {
            Destination::Stdio => None,
            Destination::File(path) => Some(open_append(path)?),
        };
        let (sender, receiver) = std::sync::mpsc::sync_channel(config.audit.buffer.max(1));
        let flag = reopen.clone();
        std::thread::Builder::new()
            .name("keygate-audit".into())
            .spawn(move || write_lines(&receiver, &destination, file, &flag))?;
        Ok(Self {
            sender: Some(sender),
            reopen,
        })
    }

    /// Records `event` without waiting: counted in `keygate_audit_events_total`; when the
    /// writer is behind by `[audit] buffer` lines, dropped and counted in
    /// `keygate_audit_dropped_total`.
    pub fn record(&self, event: &AuditEvent) {
        crate::metrics::increment("keygate_audit_events_total", [("event", event.event)]);
        let Some(sender) = &self.sender else {
            return;
        };
        match sender.try_send(Message::Line(event.line())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                metrics::counter!("keygate_audit_dropped_total").increment(1);
            }
            Err(TrySendError::Disconnected(_)) => {
                metrics::counter!("keygate_audit_dropped_total").increment(1);
                tracing::error!("the audit writer has stopped; event dropped");
            }
        }
    }

    /// Records an event of `kind` that `build` fills in, building it only when the log is
    /// on: for hot paths (every token issued), where stamping and copying fields for no
    /// reader is measurable. Counted either way, as [`Self::record`] counts.
    pub fn record_with(&self, kind: AuditKind, build: impl FnOnce(AuditEvent) -> AuditEvent) {
        if self.sender.is_some() {
            self.record(&build(AuditEvent::new(kind)));
        } else {
            crate::metrics::increment("keygate_audit_events_total", [("event", kind.as_str())]);
        }
    }

    /// Reopens the file before the next line (SIGHUP, after logrotate moved it).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
        if let Some(sender) = &self.sender {
            // When the channel is full the writer is busy and sees the flag anyway.
            let _ = sender.try_send(Message::Wake);
        }
    }
}

/// How often written lines are forced to disk.
const FSYNC_EVERY: Duration = Duration::from_secs(1);

fn write_lines(
    receiver: &Receiver<Message>,
    destination: &Destination,
    mut file: Option<File>,
    reopen: &AtomicBool,
) {
    let mut dirty = false;
    let mut synced = Instant::now();
    loop {
        let message = receiver.recv_timeout(FSYNC_EVERY);
        if reopen.swap(false, Ordering::AcqRel)
            && let Destination::File(path) = destination
        {
            if let Some(f) = &file {
                let _ = f.sync_data();
            }
            match open_append(path) {
                Ok(f) => file = Some(f),
                Err(e) => {
                    tracing::error!(error = %e, "audit log not reopened; writing to the old file")
                }
            }
        }
        match message {
            Ok(Message::Line(line)) => {
                let written = match &mut file {
                    Some(f) => f.write_all(line.as_bytes()),
                    None => {
                        let mut out = std::io::stdout().lock();
                        out.write_all(line.as_bytes()).and_then(|()| out.flush())
                    }
                };
                match written {
                    Ok(()) => dirty = true,
                    Err(e) => {
                        metrics::counter!("keygate_audit_dropped_total").increment(1);
                        tracing::error!(error = %e, "audit line not written");
                    }
                }
            }
            Ok(Message::Wake) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                if let Some(f) = &file {
                    let _ = f.sync_data();
                }
                return;
            }
        }
        if dirty && synced.elapsed() >= FSYNC_EVERY {
            if let Some(f) = &file {
                let _ = f.sync_data();
            }
            dirty = false;
            synced = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_has_only_the_fields_that_apply() {
        let line = AuditEvent::new(AuditKind::TokenIssued)
            .client_id("billing")
            .jti("j1")
            .line();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event"], "token.issued");
        assert_eq!(v["client_id"], "billing");
        assert_eq!(v["jti"], "j1");
        assert!(v["ts"].as_str().unwrap().ends_with('Z'));
        assert_eq!(v.as_object().unwrap().len(), 4, "{v}");
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
    }

    #[test]
    fn caller_supplied_ids_are_bounded() {
        let e = AuditEvent::new(AuditKind::TokenRefused).username(&"é".repeat(500));
        assert!(e.username.unwrap().len() <= MAX_FIELD);
    }
}
