//! The audit log (README, Audit log): one JSON line per security event, appended to `[audit] path`.
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
//! machine loses at most the last second). SIGHUP reopens the file, for logrotate; so does
//! the writer itself within a quarter of a second when the path names another file or none
//! (moved away, deleted): lines written meanwhile to a deleted file are counted as dropped.
//! Characters that could pass for line breaks or terminal controls are escaped
//! ([`escape_line`]); a failing disk logs one error line per ten seconds, not per event.
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
    /// `keygate directory import`: the file's principals moved into the directory.
    DirectoryImported,
    /// Admin API: a principal created.
    AdminCreated,
    /// Admin API: a principal's fields changed (or a user's password).
    AdminUpdated,
    /// Admin API: a client's key rotated.
    AdminRotated,
    /// Admin API: a principal revoked.
    AdminRevoked,
    /// Admin API: a principal deleted.
    AdminDeleted,
}

impl AuditKind {
    /// Every kind, in the order the README's audit table lists them.
    pub const ALL: [AuditKind; 16] = [
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
        AuditKind::DirectoryImported,
        AuditKind::AdminCreated,
        AuditKind::AdminUpdated,
        AuditKind::AdminRotated,
        AuditKind::AdminRevoked,
        AuditKind::AdminDeleted,
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
            AuditKind::DirectoryImported => "directory.imported",
            AuditKind::AdminCreated => "admin.created",
            AuditKind::AdminUpdated => "admin.updated",
            AuditKind::AdminRotated => "admin.rotated",
            AuditKind::AdminRevoked => "admin.revoked",
            AuditKind::AdminDeleted => "admin.deleted",
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
    /// The client whose token made the call (admin API).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
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
            actor: None,
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

    /// Sets `actor`.
    #[must_use]
    pub fn actor(mut self, id: &str) -> Self {
        self.actor = Some(bounded(id));
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

    /// The JSON line, newline included, with every character a terminal or a JavaScript
    /// reader could take for a line break or a control escaped (see [`escape_line`]).
    pub fn line(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        let mut line = escape_line(&json).into_owned();
        line.push('\n');
        line
    }
}

/// `line` with the characters serde_json leaves raw but a reader must not see raw escaped
/// as `\uXXXX`: the C1 controls (U+0080–U+009F, which some terminals obey as escape
/// sequences) and U+2028/U+2029 (line breaks to JavaScript and to some log viewers). JSON
/// allows these raw only inside strings, so escaping them keeps the line the same JSON
/// value. serde_json already escapes U+0000–U+001F (ESC, newline). `keygate audit tail`
/// applies it again to whatever a file holds.
pub fn escape_line(line: &str) -> std::borrow::Cow<'_, str> {
    fn unsafe_char(c: char) -> bool {
        matches!(c, '\u{80}'..='\u{9f}' | '\u{2028}' | '\u{2029}')
    }
    if !line.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 12);
    for c in line.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
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

/// Why the audit file could not be checked or found.
#[derive(Debug, thiserror::Error)]
pub enum AuditFileError {
    /// The audit file cannot be opened for appending, or its folder takes no new file.
    #[error("audit.path: cannot write {}", .path.display())]
    Unwritable {
        /// The audit file.
        path: PathBuf,
        /// What the system refused.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file cannot be read.
    #[error("{}", .path.display())]
    Unreadable {
        /// The configuration file.
        path: PathBuf,
        /// What the system refused.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not TOML. The parser's error is kept as one line of
    /// text, not as the source: it quotes a line of the file, which may hold a secret.
    #[error("{}: {detail}", .path.display())]
    NotToml {
        /// The configuration file.
        path: PathBuf,
        /// The parser's error without the quoted line.
        detail: String,
    },
}

/// Whether the server could open the audit file `config` names, found without creating
/// it (`keygate check-config`): an existing file must open for appending, a new one's
/// folder must take a file (tried with a probe file, removed at once).
pub fn check_destination(config: &Config) -> Result<(), AuditFileError> {
    let Some(Destination::File(path)) = destination(config) else {
        return Ok(());
    };
    let cannot = |source| AuditFileError::Unwritable {
        path: path.clone(),
        source,
    };
    if path.exists() {
        return OpenOptions::new()
            .append(true)
            .open(&path)
            .map(drop)
            .map_err(cannot);
    }
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let probe = folder.join(format!(".keygate-audit-check-{}", std::process::id()));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(cannot)?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Where the configuration file at `config_path` sends audit lines, for the CLI: read with
/// the environment (`${VAR}`, `KEYGATE_AUDIT_PATH`) when the file parses so, else the bare
/// `[audit] path` (an edit must not lose its event to an unset variable elsewhere).
pub fn destination_of_file(config_path: &Path) -> Result<Option<Destination>, AuditFileError> {
    let text =
        std::fs::read_to_string(config_path).map_err(|source| AuditFileError::Unreadable {
            path: config_path.to_path_buf(),
            source,
        })?;
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let mut config = match Config::parse(&text, &env) {
        Ok(config) => config,
        Err(_) => {
            let table: toml::Table =
                toml::from_str(&text).map_err(|e| AuditFileError::NotToml {
                    path: config_path.to_path_buf(),
                    detail: crate::config::toml_error(&e),
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

/// How often the writer checks that the path still names the file it writes to.
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// At most one error line per this long about lines not written (a full disk would
/// otherwise log one per event); the count of the others goes into the next.
const ERROR_EVERY: Duration = Duration::from_secs(10);

/// The writer thread's file and what it knows about it.
struct Writer<'a> {
    destination: &'a Destination,
    file: Option<File>,
    /// Lines written since the path was last checked: lost if the file turns out deleted.
    unchecked: u64,
    checked: Instant,
    errors: Throttled,
}

/// An error logged at most once per [`ERROR_EVERY`], with how many were not logged.
struct Throttled {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttled {
    fn report(&mut self, e: &std::io::Error, what: &str) {
        if self.last.is_some_and(|t| t.elapsed() < ERROR_EVERY) {
            self.suppressed += 1;
            return;
        }
        let suppressed = std::mem::take(&mut self.suppressed);
        tracing::error!(error = %e, suppressed, "{what}");
        self.last = Some(Instant::now());
    }
}

impl Writer<'_> {
    fn write(&mut self, line: &str) -> bool {
        let written = match &mut self.file {
            Some(f) => f.write_all(line.as_bytes()),
            None => {
                let mut out = std::io::stdout().lock();
                out.write_all(line.as_bytes()).and_then(|()| out.flush())
            }
        };
        match written {
            Ok(()) => {
                self.unchecked += 1;
                true
            }
            Err(e) => {
                metrics::counter!("keygate_audit_dropped_total").increment(1);
                self.errors.report(
                    &e,
                    "audit line not written (counted in keygate_audit_dropped_total)",
                );
                false
            }
        }
    }

    /// Reopens the file at the path (SIGHUP, or the path names another file or none).
    fn reopen(&mut self, path: &Path) {
        if let Some(f) = &self.file {
            let _ = f.sync_data();
        }
        match open_append(path) {
            Ok(f) => self.file = Some(f),
            Err(e) => self
                .errors
                .report(&e, "audit log not reopened; writing to the old file"),
        }
    }

    /// Notices that the file written to was deleted or replaced (moved away, another file
    /// put at its path) and reopens the path. Lines written since the last check to a file
    /// that no name reaches any more are lost: they are counted as dropped. A moved file
    /// keeps its lines (logrotate without SIGHUP).
    fn check(&mut self) {
        let Destination::File(path) = self.destination else {
            return;
        };
        if self.checked.elapsed() < CHECK_EVERY {
            return;
        }
        self.checked = Instant::now();
        let unchecked = std::mem::take(&mut self.unchecked);
        let Some(file) = &self.file else {
            return self.reopen(path);
        };
        let Ok(open) = file.metadata() else {
            return;
        };
        use std::os::unix::fs::MetadataExt as _;
        let same = std::fs::metadata(path)
            .is_ok_and(|now| now.ino() == open.ino() && now.dev() == open.dev());
        if same {
            return;
        }
        if open.nlink() == 0 && unchecked > 0 {
            metrics::counter!("keygate_audit_dropped_total").increment(unchecked);
            tracing::error!(
                lost = unchecked,
                path = %path.display(),
                "the audit file was deleted; lines written to it since the last check are lost (counted in keygate_audit_dropped_total)"
            );
        }
        self.reopen(path);
    }
}

fn write_lines(
    receiver: &Receiver<Message>,
    destination: &Destination,
    file: Option<File>,
    reopen: &AtomicBool,
) {
    let mut writer = Writer {
        destination,
        file,
        unchecked: 0,
        checked: Instant::now(),
        errors: Throttled {
            last: None,
            suppressed: 0,
        },
    };
    let mut dirty = false;
    let mut synced = Instant::now();
    loop {
        let message = receiver.recv_timeout(CHECK_EVERY);
        if reopen.swap(false, Ordering::AcqRel)
            && let Destination::File(path) = destination
        {
            writer.reopen(path);
            writer.unchecked = 0;
        }
        writer.check();
        match message {
            Ok(Message::Line(line)) => dirty |= writer.write(&line),
            Ok(Message::Wake) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                if let Some(f) = &writer.file {
                    let _ = f.sync_data();
                }
                return;
            }
        }
        if dirty && synced.elapsed() >= FSYNC_EVERY {
            if let Some(f) = &writer.file {
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
    fn line_breaks_and_c1_controls_from_callers_are_escaped() {
        let name = "a\u{2028}b\u{2029}c\u{85}d\u{9b}31me\u{1b}[0m\ne";
        let line = AuditEvent::new(AuditKind::TokenRefused)
            .username(name)
            .line();
        for raw in ['\u{2028}', '\u{2029}', '\u{85}', '\u{9b}', '\u{1b}'] {
            assert!(!line.contains(raw), "{raw:?} raw in {line:?}");
        }
        assert!(
            line.contains(r"a\u2028b\u2029c\u0085d\u009b31me\u001b[0m\ne"),
            "{line}"
        );
        assert_eq!(line.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["username"], name, "escaping keeps the JSON value");
        assert!(matches!(
            escape_line("plain é"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    fn audit_config(dir: &Path) -> Config {
        let mut config = Config {
            base_dir: dir.to_path_buf(),
            ..Config::default()
        };
        config.audit.path = Some("audit.jsonl".into());
        config
    }

    /// Waits (bounded) until `path` holds a line containing `needle`.
    fn wait_for_line(path: &Path, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle} in {path:?}: {text:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_deleted_audit_file_is_noticed_and_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::start(&audit_config(dir.path())).unwrap();
        log.record(&AuditEvent::new(AuditKind::KeyAdded).client_id("before"));
        wait_for_line(&path, "before");
        std::fs::remove_file(&path).unwrap();
        // Without SIGHUP: the writer finds the path empty and opens it anew.
        log.record(&AuditEvent::new(AuditKind::KeyAdded).client_id("after"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !path.exists() {
            assert!(
                Instant::now() < deadline,
                "the audit file was not made again"
            );
            log.record(&AuditEvent::new(AuditKind::KeyAdded).client_id("after"));
            std::thread::sleep(Duration::from_millis(20));
        }
        log.record(&AuditEvent::new(AuditKind::KeyAdded).client_id("landed"));
        let text = wait_for_line(&path, "landed");
        assert!(!text.contains("before"), "{text}");
    }

    #[test]
    fn a_moved_audit_file_keeps_its_lines_and_the_path_gets_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::start(&audit_config(dir.path())).unwrap();
        log.record(&AuditEvent::new(AuditKind::KeyAdded).client_id("first"));
        wait_for_line(&path, "first");
        std::fs::rename(&path, dir.path().join("audit.jsonl.1")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !path.exists() {
            assert!(
                Instant::now() < deadline,
                "the audit file was not made again"
            );
            log.record(&AuditEvent::new(AuditKind::KeyAdded).client_id("later"));
            std::thread::sleep(Duration::from_millis(20));
        }
        log.record(&AuditEvent::new(AuditKind::KeyAdded).client_id("second"));
        wait_for_line(&path, "second");
        let old = std::fs::read_to_string(dir.path().join("audit.jsonl.1")).unwrap();
        assert!(old.contains("first") && !old.contains("second"), "{old}");
    }

    #[test]
    fn a_failing_disk_logs_one_line_per_interval_not_per_event() {
        let mut errors = Throttled {
            last: None,
            suppressed: 0,
        };
        let e = std::io::Error::other("no space left on device");
        for _ in 0..1000 {
            errors.report(&e, "audit line not written");
        }
        assert!(errors.last.is_some(), "the first is logged");
        assert_eq!(
            errors.suppressed, 999,
            "the rest are counted for the next line"
        );
        errors.last = Some(Instant::now() - ERROR_EVERY);
        errors.report(&e, "audit line not written");
        assert_eq!(
            errors.suppressed, 0,
            "the next line carries the count and resets it"
        );
    }

    #[test]
    fn caller_supplied_ids_are_bounded() {
        let e = AuditEvent::new(AuditKind::TokenRefused).username(&"é".repeat(500));
        assert!(e.username.unwrap().len() <= MAX_FIELD);
    }
}
