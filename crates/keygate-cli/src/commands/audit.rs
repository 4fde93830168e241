//! `keygate audit tail`, and the CLI's own audit events (`key …`, `user …`).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use keygate_server::audit::{self, AuditEvent, AuditKind, Destination};

/// Appends `event` to the audit log the configuration at `config` names, if any. The edit
/// has landed by now: a log that cannot be written is a loud warning, not a failure.
pub(crate) fn record(config: &Path, event: &AuditEvent) {
    let outcome = match audit::destination_of_file(config) {
        Ok(Some(d)) => audit::append_now(&d, event).map_err(anyhow::Error::from),
        Ok(None) => Ok(()),
        Err(e) => Err(e.into()),
    };
    if let Err(e) = outcome {
        eprintln!("keygate: warning: the audit log was not written: {e:#}");
    }
}

/// Which lines `tail` shows.
pub(crate) struct Filter {
    pub(crate) event: Option<String>,
    pub(crate) principal: Option<String>,
}

impl Filter {
    fn matches(&self, line: &str) -> bool {
        if self.event.is_none() && self.principal.is_none() {
            return true;
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            return false;
        };
        let event_ok = self
            .event
            .as_ref()
            .is_none_or(|e| v["event"] == *e.as_str());
        let principal_ok = self
            .principal
            .as_ref()
            .is_none_or(|p| v["client_id"] == *p.as_str() || v["username"] == *p.as_str());
        event_ok && principal_ok
    }
}

/// Prints the last `lines` matching lines of the audit file, then, with `follow`, every new
/// one as it is appended (across logrotate: a moved or truncated file is reopened). Lines
/// are printed with C1 controls and U+2028/U+2029 escaped, whoever wrote the file.
pub(crate) fn tail(
    config: &Path,
    filter: &Filter,
    lines: usize,
    follow: bool,
) -> anyhow::Result<()> {
    if let Some(e) = &filter.event
        && !AuditKind::ALL.iter().any(|k| k.as_str() == e)
    {
        let known: Vec<&str> = AuditKind::ALL.iter().map(|k| k.as_str()).collect();
        anyhow::bail!("unknown event `{e}`; one of: {}", known.join(", "));
    }
    let path = match audit::destination_of_file(config)? {
        Some(Destination::File(path)) => path,
        Some(Destination::Stdio) => {
            anyhow::bail!("audit.path is \"-\": the log goes to standard output, not a file")
        }
        None => anyhow::bail!("audit.path is not set in {}", config.display()),
    };
    let mut file = open(&path)?;
    let mut last: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut reader = BufReader::new(&mut file);
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 {
        if line.ends_with('\n') && filter.matches(line.trim_end()) {
            if last.len() == lines {
                last.pop_front();
            }
            last.push_back(line.trim_end().to_owned());
        }
        line.clear();
    }
    let mut out = std::io::stdout().lock();
    for l in &last {
        writeln!(out, "{}", audit::escape_line(l))?;
    }
    out.flush()?;
    if follow {
        drop(out);
        follow_file(&path, file, filter)?;
    }
    Ok(())
}

fn open(path: &PathBuf) -> anyhow::Result<File> {
    File::open(path).with_context(|| path.display().to_string())
}

/// Polls for appended lines; reopens when the file at `path` is another file (rotated) or
/// shorter than what was read (truncated).
fn follow_file(path: &PathBuf, mut file: File, filter: &Filter) -> anyhow::Result<()> {
    let mut pos = file.stream_position()?;
    let mut pending = String::new();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let here = file.metadata()?;
        let rotated = std::fs::metadata(path)
            .is_ok_and(|now| now.ino() != here.ino() || now.dev() != here.dev());
        if rotated {
            // Whatever was appended to the old file before the move is read first.
            emit(&mut file, &mut pending, filter)?;
            file = open(path)?;
            pending.clear();
        } else if here.len() < pos {
            file.seek(SeekFrom::Start(0))?;
            pending.clear();
        }
        emit(&mut file, &mut pending, filter)?;
        pos = file.stream_position()?;
    }
}

/// Prints the complete new lines of `file`; a partial last line waits in `pending`.
fn emit(file: &mut File, pending: &mut String, filter: &Filter) -> anyhow::Result<()> {
    let mut chunk = String::new();
    file.read_to_string(&mut chunk)?;
    pending.push_str(&chunk);
    let mut out = std::io::stdout().lock();
    while let Some(end) = pending.find('\n') {
        let line: String = pending.drain(..=end).collect();
        if filter.matches(line.trim_end()) {
            writeln!(out, "{}", audit::escape_line(line.trim_end()))?;
        }
    }
    out.flush()?;
    Ok(())
}
