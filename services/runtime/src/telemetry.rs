//! Logging: ECS JSON lines for ELK, or readable text on a terminal.

use std::fmt;
use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry};

use crate::config::LogFormat;
use crate::trace::{TraceContext, TraceContextLayer};

/// Installs the global subscriber for a long-running service: logs go to
/// stdout, where container runtimes collect them. Safe to call more than
/// once (later calls are ignored), which keeps tests that start several
/// services simple.
pub fn init(service: &str, format: LogFormat, filter: &str) {
    let terminal = std::io::stdout().is_terminal();
    install(service, format, filter, std::io::stdout, terminal);
}

/// Installs the global subscriber for a one-shot command whose stdout is
/// its result (`berth check-ledger`, `berth migrate`): logs go to stderr
/// so a script reading the result never mistakes a log line for it.
pub fn init_command(service: &str, format: LogFormat, filter: &str) {
    let terminal = std::io::stderr().is_terminal();
    install(service, format, filter, std::io::stderr, terminal);
}

fn install<W>(service: &str, format: LogFormat, filter: &str, writer: W, terminal: bool)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !terminal,
    };
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let base = Registry::default().with(TraceContextLayer).with(filter);
    let result = if json {
        base.with(
            tracing_subscriber::fmt::layer()
                .event_format(EcsFormat::new(service))
                .with_writer(writer),
        )
        .try_init()
    } else {
        base.with(
            tracing_subscriber::fmt::layer()
                .with_target(true)
                .with_writer(writer),
        )
        .try_init()
    };
    // Err only means a subscriber is already installed.
    let _ = result;
}

/// Formats one event as an ECS document on a single line.
pub struct EcsFormat {
    service: String,
}

impl EcsFormat {
    pub fn new(service: &str) -> Self {
        Self {
            service: service.to_owned(),
        }
    }
}

#[derive(Default)]
struct FieldVisitor {
    fields: Map<String, Value>,
}

impl FieldVisitor {
    fn put(&mut self, field: &Field, value: Value) {
        let name = match field.name() {
            "message" => "message",
            // ECS puts error text under error.message.
            "error" | "err" => "error.message",
            other => other,
        };
        self.fields.insert(name.to_owned(), value);
    }
}

impl Visit for FieldVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
        let mut chain = Vec::new();
        let mut source = value.source();
        while let Some(s) = source {
            chain.push(s.to_string());
            source = s.source();
        }
        if !chain.is_empty() {
            self.fields.insert(
                "error.stack_trace".to_owned(),
                Value::String(chain.join("\ncaused by: ")),
            );
        }
    }
}

impl<S, N> FormatEvent<S, N> for EcsFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut doc = Map::new();
        let now = time::OffsetDateTime::now_utc();
        let timestamp = now
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|_| fmt::Error)?;
        doc.insert("@timestamp".into(), Value::String(timestamp));
        doc.insert(
            "log.level".into(),
            Value::String(meta.level().as_str().to_lowercase()),
        );
        doc.insert("log.logger".into(), Value::String(meta.target().to_owned()));
        doc.insert("service.name".into(), Value::String(self.service.clone()));
        doc.insert("ecs.version".into(), Value::String("8.11.0".into()));

        let trace = ctx.lookup_current().and_then(|span| {
            span.scope()
                .find_map(|s| s.extensions().get::<TraceContext>().copied())
        });
        if let Some(trace) = trace {
            doc.insert("trace.id".into(), Value::String(trace.trace_id_hex()));
            doc.insert("span.id".into(), Value::String(trace.span_id_hex()));
        }

        let mut visitor = FieldVisitor::default();
        event.record(&mut visitor);
        if !visitor.fields.contains_key("message") {
            visitor
                .fields
                .insert("message".into(), Value::String(String::new()));
        }
        for (k, v) in visitor.fields {
            doc.entry(k).or_insert(v);
        }
        let line = serde_json::to_string(&Value::Object(doc)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{line}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn ecs_line_has_required_fields_and_trace_ids() {
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = Registry::default().with(TraceContextLayer).with(
            tracing_subscriber::fmt::layer()
                .event_format(EcsFormat::new("booking"))
                .with_writer(move || writer.clone()),
        );
        let ctx = TraceContext::new_root();
        tracing::subscriber::with_default(subscriber, || {
            let span = ctx.span("test");
            let _g = span.enter();
            let inner = tracing::info_span!("inner");
            let _g2 = inner.enter();
            let err = std::io::Error::other("disk full");
            tracing::warn!(
                error = &err as &dyn std::error::Error,
                booking_id = 42,
                "could not save"
            );
        });
        let out = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        let doc: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(doc["message"], "could not save");
        assert_eq!(doc["log.level"], "warn");
        assert_eq!(doc["service.name"], "booking");
        assert_eq!(doc["trace.id"], ctx.trace_id_hex());
        assert_eq!(doc["span.id"], ctx.span_id_hex());
        assert_eq!(doc["error.message"], "disk full");
        assert_eq!(doc["booking_id"], 42);
        assert!(doc["@timestamp"].as_str().unwrap().ends_with('Z'));
    }
}
