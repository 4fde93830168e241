//! The text log's field formatter: tracing-subscriber's `DefaultFields` output, byte for
//! byte, with its cost taken off the fields that make up nearly every line and span.
//!
//! Each request opens a `request` span whose `request_id` the fmt layer formats when the
//! span is created, whether or not a line is ever written in it (docs/operations.md, the
//! log). `DefaultFields` writes a string field through `Debug`, which escapes it one
//! character at a time; a value of printable ASCII with no `"` or `\` — a request id, a
//! route, a client id — escapes to itself, so it is written as is. Anything else, and
//! every line with colour, goes through `DefaultFields` itself.

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{DefaultFields, DefaultVisitor, Writer};

/// See the module's documentation.
#[derive(Debug, Default)]
pub(crate) struct LogFields;

impl<'writer> FormatFields<'writer> for LogFields {
    fn format_fields<R: RecordFields>(
        &self,
        writer: Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        if writer.has_ansi_escapes() {
            return DefaultFields::new().format_fields(writer, fields);
        }
        let mut visitor = Plain {
            writer,
            is_empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Writes plain string fields itself and hands every other field to a `DefaultVisitor`
/// that knows whether a field came before it.
struct Plain<'a> {
    writer: Writer<'a>,
    is_empty: bool,
    result: std::fmt::Result,
}

impl Plain<'_> {
    /// `field` as `DefaultVisitor` writes it.
    fn default(&mut self, field: &Field, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.result.is_err() {
            return;
        }
        let mut visitor = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut visitor);
        self.result = visitor.finish();
        // `DefaultVisitor` skips the `log.` fields of events that came from the `log`
        // crate (they are the line's metadata); every other field it writes.
        if !field.name().starts_with("log.") {
            self.is_empty = false;
        }
    }
}

/// Printable ASCII other than `"` and `\`: what `<str as Debug>` writes unchanged.
fn escapes_to_itself(value: &str) -> bool {
    value
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

impl Visit for Plain<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let name = field.name();
        let plain = name != "message"
            && !name.starts_with("r#")
            && !name.starts_with("log.")
            && escapes_to_itself(value);
        if !plain {
            return self.default(field, |v| v.record_str(field, value));
        }
        if self.result.is_err() {
            return;
        }
        let separator = if self.is_empty { "" } else { " " };
        self.is_empty = false;
        let parts = [separator, name, "=\"", value, "\""];
        // One write of the whole field where it fits a small buffer: the span's field
        // string then grows once, not once per part.
        let mut buffer = [0u8; 128];
        let mut len = 0;
        for part in parts {
            if let Some(slot) = buffer.get_mut(len..len + part.len()) {
                slot.copy_from_slice(part.as_bytes());
            }
            len += part.len();
        }
        self.result = match buffer.get(..len).map(std::str::from_utf8) {
            Some(Ok(field)) => self.writer.write_str(field),
            _ => parts
                .iter()
                .try_for_each(|part| self.writer.write_str(part)),
        };
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.default(field, |v| v.record_debug(field, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.default(field, |v| v.record_i64(field, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.default(field, |v| v.record_u64(field, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.default(field, |v| v.record_bool(field, value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.default(field, |v| v.record_f64(field, value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.default(field, |v| v.record_error(field, value));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    /// Everything the log wrote.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The lines a run of `emit` writes through the fmt layer with `fields`.
    fn lines<N>(fields: N, ansi: bool, emit: fn()) -> String
    where
        N: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        let captured = Captured::default();
        let writer = captured.clone();
        let layer = tracing_subscriber::fmt::layer()
            .without_time()
            .with_ansi(ansi)
            .fmt_fields(fields)
            .with_writer(move || writer.clone());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, emit);
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
    }

    fn emit() {
        let span = tracing::info_span!("request", request_id = "3f2a-b1c9_x.Y");
        let _in = span.enter();
        tracing::info!(
            sub = "billing",
            jti = "aCdBNR0DNcwqcifw4hvGFw",
            "token issued"
        );
        tracing::warn!(
            route = "/login",
            quoted = "a \"b\" \\ c",
            control = "line\nbreak\u{1b}[31m",
            unicode = "é ✓",
            empty = "",
            n = 42u64,
            i = -7i64,
            ok = true,
            ratio = 0.5f64,
            debug = ?Some("x"),
            shown = %"display",
            r#type = "raw",
            "a message with \"quotes\""
        );
        let error = std::io::Error::other("disk full");
        tracing::error!(
            error = &error as &(dyn std::error::Error + 'static),
            path = "/x"
        );
        tracing::info!(first = 1u64, then = "plain", last = "quo\"te");
        // Longer than the one-write buffer.
        tracing::info!(long = "0123456789abcdef".repeat(12).as_str(), after = "x");
        let nested = tracing::info_span!("store", op = "EVAL", key = "keygate:{abc}:quota");
        let _n = nested.enter();
        tracing::info!("only a message");
    }

    #[test]
    fn lines_are_those_default_fields_writes() {
        for ansi in [false, true] {
            let ours = lines(LogFields, ansi, emit);
            let theirs = lines(DefaultFields::new(), ansi, emit);
            assert_eq!(ours, theirs, "ansi: {ansi}");
            assert_eq!(ours.lines().count(), 6, "{ours}");
        }
    }

    #[test]
    fn only_printable_ascii_without_quote_or_backslash_is_written_as_is() {
        assert!(escapes_to_itself("kg req-1 /login:8080 @x ~"));
        assert!(escapes_to_itself(""));
        for escaped in ["\"", "\\", "\n", "\u{7f}", "é", "\u{1b}"] {
            assert!(!escapes_to_itself(escaped), "{escaped:?}");
        }
    }
}
