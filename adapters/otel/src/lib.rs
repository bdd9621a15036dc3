//! flext's OpenTelemetry wiring.
//!
//! **Traces.** flext opens `tracing` spans named after the OpenTelemetry semantic
//! conventions (command, query and event dispatch; event-store appends and reads;
//! projection batches; plugin start and stop). Export them with `tracing-opentelemetry`'s
//! layer, and call [`install`] once so the trace context crosses the event store: a
//! command's W3C `traceparent` is stored with the events it records, and the projection
//! batch or event handler that processes them later, in any process, links to it.
//!
//! ```
//! use opentelemetry::trace::TracerProvider as _;
//! use tracing_subscriber::layer::SubscriberExt as _;
//!
//! let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
//! let subscriber = tracing_subscriber::registry()
//!     .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("my-service")));
//! tracing::subscriber::set_global_default(subscriber).expect("the first subscriber");
//! flext::otel::install();
//! ```
//!
//! Install the subscriber globally, not per thread (`set_default`): the SQLite store's
//! driver runs statements on worker threads that drop the caller's span there, and
//! `tracing-subscriber`'s registry releases a closed span's parent through the default
//! subscriber *of the thread that closes it*, so under a thread-local subscriber a
//! command's span can stay open (and never be exported) after its append span closed on
//! such a thread.
//!
//! **Metrics.** [`OtelMetrics`] implements the metrics port on an
//! OpenTelemetry [`Meter`]: every `count` is a `u64` counter, every `observe` a histogram
//! and every `gauge` an `f64` gauge, named as flext names them (`flext.dispatch`,
//! `flext.projection.batch.size`, ...), labels as attributes. Give it to the behaviors
//! (`MetricsBehavior`), the projection runner and the bridge (`BridgeMetrics`).
//!
//! ```
//! use flext::otel::OtelMetrics;
//! use flext::ports::Metrics;
//!
//! let meter = opentelemetry::global::meter("my-service");
//! let metrics = OtelMetrics::new(meter);
//! metrics.count("flext.dispatch", 1, &[("message_type", "open"), ("outcome", "ok")]);
//! ```

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use flext_ports::trace::Propagator;
use flext_ports::{Labels, Metrics};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Installs [`OtelPropagator`] as flext's propagator (see
/// [`flext_ports::trace::set_propagator`]); returns whether this call installed it.
/// Calling it again is harmless.
pub fn install() -> bool {
    flext_ports::trace::set_propagator(OtelPropagator)
}

/// Reads and sets the OpenTelemetry context of `tracing` spans through
/// `tracing-opentelemetry`, and writes and parses W3C `traceparent`s
/// (`00-<trace id>-<span id>-<flags>`). On spans of a subscriber without the
/// OpenTelemetry layer it does nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct OtelPropagator;

/// Formats `context` as a W3C `traceparent`, if it is valid.
pub fn traceparent(context: &SpanContext) -> Option<String> {
    context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            context.trace_id(),
            context.span_id(),
            context.trace_flags().to_u8()
        )
    })
}

/// Parses a W3C `traceparent` into a remote span context; `None` if it is not one.
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    if !flext_ports::is_valid_traceparent(value) {
        return None;
    }
    let mut parts = value.split('-');
    let _version = parts.next()?;
    let trace_id = TraceId::from_hex(parts.next()?).ok()?;
    let span_id = SpanId::from_hex(parts.next()?).ok()?;
    let flags = u8::from_str_radix(parts.next()?, 16).ok()?;
    let context = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags & TraceFlags::SAMPLED.to_u8()),
        true,
        TraceState::default(),
    );
    context.is_valid().then_some(context)
}

impl Propagator for OtelPropagator {
    fn traceparent(&self, span: &tracing::Span) -> Option<String> {
        traceparent(span.context().span().span_context())
    }

    fn set_parent(&self, span: &tracing::Span, traceparent: &str) {
        if let Some(remote) = parse_traceparent(traceparent) {
            let parent = opentelemetry::Context::new().with_remote_span_context(remote);
            // Fails only when the span has already started; then it keeps its parent.
            let _ = span.set_parent(parent);
        }
    }

    fn add_link(&self, span: &tracing::Span, traceparent: &str) {
        if let Some(remote) = parse_traceparent(traceparent) {
            span.add_link(remote);
        }
    }
}

/// The metrics port on an OpenTelemetry meter; instruments are made on first use and
/// kept.
pub struct OtelMetrics {
    meter: Meter,
    counters: Mutex<HashMap<&'static str, Counter<u64>>>,
    histograms: Mutex<HashMap<&'static str, Histogram<f64>>>,
    gauges: Mutex<HashMap<&'static str, Gauge<f64>>>,
}

impl std::fmt::Debug for OtelMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtelMetrics").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Instruments are only ever inserted whole: a poisoned map is still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn attributes(labels: Labels<'_>) -> Vec<KeyValue> {
    labels
        .iter()
        .map(|(k, v)| KeyValue::new(*k, v.to_string()))
        .collect()
}

impl OtelMetrics {
    /// Records on `meter`.
    pub fn new(meter: Meter) -> Self {
        OtelMetrics {
            meter,
            counters: Mutex::default(),
            histograms: Mutex::default(),
            gauges: Mutex::default(),
        }
    }
}

impl Metrics for OtelMetrics {
    fn count(&self, name: &'static str, value: u64, labels: Labels<'_>) {
        let counter = lock(&self.counters)
            .entry(name)
            .or_insert_with(|| self.meter.u64_counter(name).build())
            .clone();
        counter.add(value, &attributes(labels));
    }

    fn observe(&self, name: &'static str, value: f64, labels: Labels<'_>) {
        let histogram = lock(&self.histograms)
            .entry(name)
            .or_insert_with(|| self.meter.f64_histogram(name).build())
            .clone();
        histogram.record(value, &attributes(labels));
    }

    fn gauge(&self, name: &'static str, value: f64, labels: Labels<'_>) {
        let gauge = lock(&self.gauges)
            .entry(name)
            .or_insert_with(|| self.meter.f64_gauge(name).build())
            .clone();
        gauge.record(value, &attributes(labels));
    }
}
