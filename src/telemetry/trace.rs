//! Tracing (SPEC §4.7): W3C `traceparent` / `tracestate` continued from
//! trusted proxies only, spans for the request, its decision and every call
//! the gateway makes, exported over OTLP/HTTP by a batch processor on its
//! own thread (bounded queue: a full queue drops spans, a request never
//! waits).
//!
//! [`Tracing`] is the one handle the composition root keeps: reloads swap
//! the exporter behind it when `tracing:` changes. Without `tracing:` the
//! request path sees `None` and does nothing at all (no header is read or
//! written, no span is made).
//!
//! No span attribute holds a credential: paths without their query, hosts
//! without userinfo, status codes, refusal codes, route templates.
//!
//! Adapter: depends on the OpenTelemetry SDK and its OTLP exporter.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
};

pub use opentelemetry::context::FutureExt;
pub use opentelemetry::trace::SpanKind as Kind;

use crate::config;

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The running tracer, swapped by reloads; cheap to clone.
#[derive(Clone, Default)]
pub struct Tracing(Arc<ArcSwapOption<Active>>);

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tracing")
    }
}

struct Active {
    spec: config::Tracing,
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Tracing {
    /// Makes `spec` the running tracer; unchanged settings keep the
    /// running exporter (and its queue). The one replaced is flushed and
    /// shut down on a thread of its own: never on a request's thread.
    pub fn apply(&self, spec: Option<&config::Tracing>) {
        let current = self.0.load();
        if current.as_ref().map(|a| &a.spec) == spec {
            return;
        }
        let next = spec.map(|spec| Arc::new(build(spec)));
        if let Some(old) = self.0.swap(next) {
            retire(&old.provider);
        }
    }

    /// The tracer for a new state or a background call; `None` without
    /// `tracing:`.
    pub fn tracer(&self) -> Option<SdkTracer> {
        self.0.load().as_ref().map(|a| a.tracer.clone())
    }

    /// Flushes what is queued (at exit), waiting at most the SDK's own
    /// export timeout. Blocking: call from a thread that may block.
    pub fn shutdown(&self) {
        if let Some(active) = self.0.swap(None) {
            let _ = active.provider.shutdown();
        }
    }
}

fn retire(provider: &SdkTracerProvider) {
    let provider = provider.clone();
    let _ = std::thread::Builder::new()
        .name("scopegate-trace-retire".into())
        .spawn(move || {
            let _ = provider.shutdown();
        });
}

/// The provider for `spec`. An exporter that cannot be built is logged:
/// trace context is still continued and propagated, spans are not sent.
fn build(spec: &config::Tracing) -> Active {
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(spec.sample_ratio)));
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_service_name(spec.service_name.clone())
        .build();
    let mut builder = SdkTracerProvider::builder()
        .with_sampler(sampler)
        .with_resource(resource);
    if let Some(url) = &spec.traces_url {
        use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
        let headers = spec
            .headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.expose().to_owned()))
            .collect();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(url.clone())
            .with_headers(headers)
            .with_timeout(std::time::Duration::from_secs(10))
            .build();
        match exporter {
            Ok(exporter) => builder = builder.with_span_processor(batch(exporter, spec)),
            Err(e) => tracing::error!(
                "tracing: the OTLP exporter could not be built ({e}); spans are not exported"
            ),
        }
    }
    let provider = builder.build();
    let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "scopegate");
    Active {
        spec: spec.clone(),
        provider,
        tracer,
    }
}

/// The batch processor: its own thread, a queue of `queue_size` spans
/// (a span that finds it full is dropped, counted by the SDK, never
/// waited for), a batch every `export_interval`.
fn batch(exporter: opentelemetry_otlp::SpanExporter, spec: &config::Tracing) -> BatchSpanProcessor {
    let config = BatchConfigBuilder::default()
        .with_max_queue_size(spec.queue_size)
        .with_max_export_batch_size(spec.queue_size.min(512))
        .with_scheduled_delay(spec.export_interval)
        .build();
    BatchSpanProcessor::builder(exporter)
        .with_batch_config(config)
        .build()
}

/// The trace a request belongs to: the trusted caller's (when its
/// `traceparent` is valid), else a new one. An untrusted caller's
/// `tracestate` is never carried on.
pub fn parent(headers: &HeaderMap, trusted: bool) -> Context {
    if !trusted || headers.get_all(TRACEPARENT).iter().count() != 1 {
        return Context::new();
    }
    let cx = TraceContextPropagator::new().extract(&Headers(headers));
    if cx.span().span_context().is_valid() {
        cx
    } else {
        Context::new()
    }
}

/// Starts a span below `parent` (the current context when `None`: a
/// background call outside any request is a root).
pub fn start(
    tracer: &SdkTracer,
    parent: Option<&Context>,
    name: impl Into<std::borrow::Cow<'static, str>>,
    kind: SpanKind,
    attributes: Vec<KeyValue>,
) -> Context {
    let builder = tracer
        .span_builder(name)
        .with_kind(kind)
        .with_attributes(attributes);
    match parent {
        Some(parent) => parent.with_span(tracer.build_with_context(builder, parent)),
        None => {
            let current = Context::current();
            current.with_span(tracer.build_with_context(builder, &current))
        }
    }
}

/// A CLIENT span for a call the gateway makes (JWKS, introspection, token
/// endpoint), below the current context (a request's, when the call is
/// made for one; a root for background refreshes). `url` is reduced to
/// its host and path.
fn client_call(
    tracer: Option<&SdkTracer>,
    name: &'static str,
    method: &'static str,
    url: &str,
) -> Option<Context> {
    let tracer = tracer?;
    let mut attributes = vec![KeyValue::new("http.request.method", method)];
    if let Ok(uri) = url.parse::<http::Uri>() {
        if let Some(host) = uri.host() {
            attributes.push(KeyValue::new("server.address", host.to_owned()));
        }
        attributes.push(KeyValue::new("url.path", uri.path().to_owned()));
    }
    Some(start(tracer, None, name, SpanKind::Client, attributes))
}

/// Runs one call the gateway makes (`jwks`, `introspection`, `token`)
/// under a CLIENT span when traced: below the current context (the
/// request's `authorize` span for an introspection made for a request), a
/// root for background fetches.
pub async fn client<T, E>(
    tracing: &Tracing,
    name: &'static str,
    method: &'static str,
    url: &str,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let Some(cx) = client_call(tracing.tracer().as_ref(), name, method, url) else {
        return call.await;
    };
    let result = call.with_context(cx.clone()).await;
    let span = cx.span();
    if result.is_err() {
        span.set_status(Status::error("failed"));
    }
    span.end();
    result
}

/// Ends a span with its outcome: an HTTP status when there was one, else
/// an error text (a class, never a body or a credential).
pub fn finish(cx: &Context, status: Result<u16, &'static str>) {
    let span = cx.span();
    match status {
        Ok(code) => {
            span.set_attribute(KeyValue::new("http.response.status_code", i64::from(code)));
            if code >= 500 {
                span.set_status(Status::error(""));
            }
        }
        Err(why) => span.set_status(Status::error(why)),
    }
    span.end();
}

/// Replaces the client's trace headers with the span's: the upstream's
/// parent is the gateway.
pub fn inject(cx: &Context, headers: &mut HeaderMap) {
    headers.remove(TRACEPARENT);
    headers.remove(TRACESTATE);
    TraceContextPropagator::new().inject_context(cx, &mut HeadersMut(headers));
}

/// The `traceparent` a response or log line may name (`trace_id`).
pub fn trace_id(cx: &Context) -> String {
    cx.span().span_context().trace_id().to_string()
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        // An empty `tracestate` is not sent (W3C trace context §3.3).
        if value.is_empty() {
            return;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// A span's end for every path out of a function (an early return, a
/// dropped future): ended with an error unless [`Guard::finish`] ran.
pub struct Guard(Option<Context>);

impl Guard {
    pub fn new(cx: Option<Context>) -> Self {
        Guard(cx)
    }

    pub fn context(&self) -> Option<&Context> {
        self.0.as_ref()
    }

    pub fn finish(mut self, status: Result<u16, &'static str>) {
        if let Some(cx) = self.0.take() {
            finish(&cx, status);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(cx) = self.0.take() {
            finish(&cx, Err("cancelled"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_trusted_valid_single_traceparent_is_continued() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static(valid));
        let id = |cx: &Context| cx.span().span_context().trace_id().to_string();
        assert_eq!(id(&parent(&h, true)), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(!parent(&h, false).span().span_context().is_valid());
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "garbage",
        ] {
            let mut h = HeaderMap::new();
            h.insert(TRACEPARENT, HeaderValue::from_static(bad));
            assert!(!parent(&h, true).span().span_context().is_valid(), "{bad}");
        }
        h.append(TRACEPARENT, HeaderValue::from_static(valid));
        assert!(
            !parent(&h, true).span().span_context().is_valid(),
            "two traceparent fields are no parent"
        );
    }
}
