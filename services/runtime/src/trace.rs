//! W3C Trace Context (`traceparent`) so one trace id follows a request
//! through every service, and appears as `trace.id` in every log line.
//!
//! The context is attached to the request's tracing span (fields `trace.id`
//! and `span.id`); [`TraceContextLayer`] copies it into the span's extensions
//! so the log formatter and outbound calls can find it from any child span.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderValue, Request};
use rand::Rng;
use tower::{Layer, Service};
use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::Context as LayerContext;
use tracing_subscriber::registry::LookupSpan;

pub const TRACEPARENT: &str = "traceparent";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

impl TraceContext {
    pub fn new_root() -> Self {
        let mut rng = rand::rng();
        let mut trace_id = [0u8; 16];
        rng.fill(&mut trace_id);
        // All-zero ids are invalid per the spec.
        trace_id[15] |= 1;
        Self {
            trace_id,
            span_id: random_span_id(),
            sampled: true,
        }
    }

    /// A new span in the same trace.
    pub fn child(&self) -> Self {
        Self {
            span_id: random_span_id(),
            ..*self
        }
    }

    /// Parses version 00 of the header; anything malformed is rejected so a
    /// fresh trace starts instead of propagating garbage.
    pub fn parse(header: &str) -> Option<Self> {
        let parts: Vec<&str> = header.trim().split('-').collect();
        if parts.len() < 4 || parts[0].len() != 2 || parts[0] == "ff" {
            return None;
        }
        if parts[0] == "00" && parts.len() != 4 {
            return None;
        }
        let trace_id: [u8; 16] = decode_hex(parts[1])?;
        let span_id: [u8; 8] = decode_hex(parts[2])?;
        let flags: [u8; 1] = decode_hex(parts[3])?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            sampled: flags[0] & 1 == 1,
        })
    }

    pub fn to_header(&self) -> String {
        let mut header = String::with_capacity(55);
        header.push_str("00-");
        push_hex(&mut header, &self.trace_id);
        header.push('-');
        push_hex(&mut header, &self.span_id);
        header.push_str(if self.sampled { "-01" } else { "-00" });
        header
    }

    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }

    /// Context of the current tracing span (or its nearest ancestor that has
    /// one), if the global subscriber is ours.
    pub fn current() -> Option<Self> {
        tracing::Span::current().with_subscriber(|(id, dispatch)| {
            let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
            let span = registry.span(id)?;
            span.scope()
                .find_map(|s| s.extensions().get::<TraceContext>().copied())
        })?
    }

    /// Context continuing `headers`' trace as a new span, or a new trace.
    pub fn from_headers(headers: &http::HeaderMap) -> Self {
        headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(Self::parse)
            .map(|parent| parent.child())
            .unwrap_or_else(Self::new_root)
    }

    /// A span carrying this context; log lines inside it get its ids.
    pub fn span(&self, name: &'static str) -> tracing::Span {
        tracing::info_span!("request", otel.name = name, trace.id = %self.trace_id_hex(), span.id = %self.span_id_hex())
    }
}

fn random_span_id() -> [u8; 8] {
    let mut id = [0u8; 8];
    rand::rng().fill(&mut id);
    id[7] |= 1;
    id
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    s
}

/// Lower-case hex by table: this runs several times per request, and
/// `write!` per byte went through the formatting machinery each time.
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

fn decode_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

/// Copies `trace.id`/`span.id` span fields into a typed span extension.
pub struct TraceContextLayer;

#[derive(Default)]
struct IdVisitor {
    trace: Option<String>,
    span: Option<String>,
}

impl Visit for IdVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "trace.id" => self.trace = Some(format!("{value:?}")),
            "span.id" => self.span = Some(format!("{value:?}")),
            _ => {}
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &format_args!("{value}"));
    }
}

impl<S> tracing_subscriber::Layer<S> for TraceContextLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        let mut visitor = IdVisitor::default();
        attrs.record(&mut visitor);
        let (Some(trace), Some(span)) = (visitor.trace, visitor.span) else {
            return;
        };
        let (Some(trace_id), Some(span_id)) = (decode_hex(&trace), decode_hex(&span)) else {
            return;
        };
        if let Some(span_ref) = ctx.span(id) {
            span_ref.extensions_mut().insert(TraceContext {
                trace_id,
                span_id,
                sampled: true,
            });
        }
    }
}

/// Outbound: sets `traceparent` for the current trace (a new child span).
#[derive(Clone, Copy, Default)]
pub struct PropagateTraceLayer;

impl<S> Layer<S> for PropagateTraceLayer {
    type Service = PropagateTrace<S>;
    fn layer(&self, inner: S) -> Self::Service {
        PropagateTrace { inner }
    }
}

#[derive(Clone)]
pub struct PropagateTrace<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for PropagateTrace<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if let Some(ctx) = TraceContext::current()
            && let Ok(value) = HeaderValue::from_str(&ctx.child().to_header())
        {
            request.headers_mut().insert(TRACEPARENT, value);
        }
        self.inner.call(request)
    }
}

/// Inbound (HTTP and gRPC servers): continues the caller's trace, runs the
/// request inside a span carrying it, and echoes `traceparent` back.
#[derive(Clone, Copy, Default)]
pub struct InboundTraceLayer;

impl<S> Layer<S> for InboundTraceLayer {
    type Service = InboundTrace<S>;
    fn layer(&self, inner: S) -> Self::Service {
        InboundTrace { inner }
    }
}

#[derive(Clone)]
pub struct InboundTrace<S> {
    inner: S,
}

impl<S, B, RB> Service<Request<B>> for InboundTrace<S>
where
    S: Service<Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        use tracing::Instrument;
        let ctx = TraceContext::from_headers(request.headers());
        let span = tracing::info_span!(
            "request",
            trace.id = %ctx.trace_id_hex(),
            span.id = %ctx.span_id_hex(),
            http.request.method = %request.method(),
            url.path = %request.uri().path(),
        );
        request.extensions_mut().insert(ctx);
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(
            async move {
                let mut response = future.await?;
                if let Ok(value) = HeaderValue::from_str(&ctx.to_header()) {
                    response.headers_mut().insert(TRACEPARENT, value);
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_malformed() {
        let h = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = TraceContext::parse(h).unwrap();
        assert_eq!(ctx.to_header(), h);
        assert!(ctx.sampled);
        let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
        let ctx = TraceContext::parse(unsampled).unwrap();
        assert!(!ctx.sampled);
        assert_eq!(ctx.to_header(), unsampled);
        assert_eq!(ctx.trace_id_hex(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(ctx.span_id_hex(), "b7ad6b7169203331");
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(TraceContext::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn child_keeps_trace_and_changes_span() {
        let root = TraceContext::new_root();
        let child = root.child();
        assert_eq!(root.trace_id, child.trace_id);
        assert_ne!(root.span_id, child.span_id);
    }
}
