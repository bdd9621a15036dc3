//! Traces: the spans flext opens (with [`tracing`]) and the seam through which a trace
//! context crosses the event store.
//!
//! flext opens `tracing` spans and names them after the OpenTelemetry semantic conventions
//! (`otel.name`, `otel.kind`, `db.*`, `messaging.*`, `error.type`), so any `tracing`
//! subscriber sees them and an OpenTelemetry bridge exports them as they are meant. What
//! `tracing` cannot do by itself is turn a span into a W3C `traceparent` and back; a
//! [`Propagator`] does that. `flext-otel` installs one ([`set_propagator`]); with none
//! installed flext still opens its spans but stores and follows no trace context beyond
//! what a [`Context`](crate::Context) was given by hand.
//!
//! [`StoreTelemetry`] is what the event stores use to trace and measure their appends and
//! reads.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use flext_domain::{Error, NewEvent, RecordedEvent, StreamId};

use crate::event_store::{AppendOutcome, FilteredPage};
use crate::message::is_valid_traceparent;
use crate::metrics::Metrics;

/// Turns spans into W3C `traceparent`s and back. Implemented by `flext-otel`'s
/// `OtelPropagator` on top of `tracing-opentelemetry`.
pub trait Propagator: Send + Sync + 'static {
    /// The `traceparent` of `span`, if it belongs to a sampled or unsampled trace.
    fn traceparent(&self, span: &tracing::Span) -> Option<String>;

    /// Makes the remote context `traceparent` the parent of `span` (before it is entered).
    fn set_parent(&self, span: &tracing::Span, traceparent: &str);

    /// Links `span` to the remote context `traceparent`.
    fn add_link(&self, span: &tracing::Span, traceparent: &str);
}

static PROPAGATOR: OnceLock<Box<dyn Propagator>> = OnceLock::new();

/// Installs the process's propagator. The first call wins (as with a global tracing
/// subscriber); a later call returns `false` and changes nothing.
pub fn set_propagator(propagator: impl Propagator) -> bool {
    PROPAGATOR.set(Box::new(propagator)).is_ok()
}

/// The installed propagator, if any.
pub fn propagator() -> Option<&'static dyn Propagator> {
    PROPAGATOR.get().map(|p| p.as_ref())
}

/// The `traceparent` of the current span, when a propagator is installed and the current
/// span belongs to a trace.
pub fn current_traceparent() -> Option<String> {
    // The propagator first: without one (the usual case in tests and without
    // OpenTelemetry) there is no need to look up the current span.
    let propagator = propagator()?;
    let span = tracing::Span::current();
    if span.is_none() {
        return None;
    }
    propagator
        .traceparent(&span)
        .filter(|t| is_valid_traceparent(t))
}

/// Continues the trace context `traceparent` (a context given by hand, or stored with an
/// event) in `span`, before it is entered: as its parent when no span is current, else,
/// when `link` is set, as a link (the current span is the better parent). Nothing without
/// a propagator.
pub fn continue_trace(span: &tracing::Span, traceparent: &str, link: bool) {
    let Some(p) = propagator() else {
        return;
    };
    if current_traceparent().is_none() {
        p.set_parent(span, traceparent);
    } else if link {
        p.add_link(span, traceparent);
    }
}

/// Links `span` to the trace context stored with `event` (its `traceparent` header), if
/// it has a valid one and a propagator is installed.
pub fn link_to_event(span: &tracing::Span, event: &RecordedEvent) {
    if let (Some(p), Some(tp)) = (propagator(), stored_traceparent(event)) {
        p.add_link(span, tp);
    }
}

/// The valid `traceparent` stored with `event`, if any.
pub fn stored_traceparent(event: &RecordedEvent) -> Option<&str> {
    event
        .metadata
        .headers
        .get(crate::message::TRACEPARENT_HEADER)
        .map(String::as_str)
        .filter(|t| is_valid_traceparent(t))
}

/// Traces and measures an event store's operations: one client span per call, named
/// `"{operation} {table}"` with the database attributes of the OpenTelemetry conventions
/// (`db.system.name`, `db.operation.name`, `db.collection.name`, `db.namespace`), the
/// stream, the number of events and, on failure, `error.type` (the error's reason); and,
/// with a metrics recorder, the histograms `flext.store.duration` (seconds, by operation,
/// system and outcome) and `flext.store.events` (events appended or read per call).
#[derive(Clone)]
pub struct StoreTelemetry {
    system: &'static str,
    collection: &'static str,
    namespace: Option<Arc<str>>,
    metrics: Option<Arc<dyn Metrics>>,
}

impl std::fmt::Debug for StoreTelemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreTelemetry")
            .field("system", &self.system)
            .field("collection", &self.collection)
            .field("namespace", &self.namespace)
            .field("metrics", &self.metrics.is_some())
            .finish()
    }
}

impl StoreTelemetry {
    /// Telemetry for a store on `system` (`"postgresql"`, `"sqlite"`, or `"memory"`: the
    /// conventions' `db.system.name`) keeping its events in `collection` (the table),
    /// without metrics.
    pub fn new(system: &'static str, collection: &'static str) -> Self {
        StoreTelemetry {
            system,
            collection,
            namespace: None,
            metrics: None,
        }
    }

    /// Reports `namespace` (a PostgreSQL schema, a SQLite file) as `db.namespace`.
    pub fn with_namespace(mut self, namespace: impl AsRef<str>) -> Self {
        self.namespace = Some(Arc::from(namespace.as_ref()));
        self
    }

    /// Records durations and sizes on `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<dyn Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn span(&self, operation: &'static str, stream: Option<&StreamId>) -> tracing::Span {
        let span = tracing::info_span!(
            "flext.store",
            otel.name = tracing::field::Empty,
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            db.system.name = self.system,
            db.operation.name = operation,
            db.collection.name = self.collection,
            db.namespace = tracing::field::Empty,
            flext.stream = tracing::field::Empty,
            flext.event.count = tracing::field::Empty,
            messaging.message.conversation_id = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        if !span.is_disabled() {
            span.record(
                "otel.name",
                tracing::field::display(format_args!("{operation} {}", self.collection)),
            );
            if let Some(ns) = &self.namespace {
                span.record("db.namespace", ns.as_ref());
            }
            if let Some(stream) = stream {
                span.record("flext.stream", stream.as_str());
            }
        }
        span
    }

    /// Opens the span of an append of `events` to `stream` (it carries the first event's
    /// correlation id); run the append with [`StoreOp::append`].
    pub fn append(&self, stream: &StreamId, events: &[NewEvent]) -> StoreOp<'_> {
        let span = self.span("append", Some(stream));
        if !span.is_disabled()
            && let Some(c) = events.first().and_then(|e| e.metadata.correlation_id)
        {
            span.record(
                "messaging.message.conversation_id",
                tracing::field::display(c),
            );
        }
        StoreOp {
            telemetry: self,
            operation: "append",
            span,
            events: events.len(),
        }
    }

    /// Opens the span of a read (`operation` is `read_stream`, `read_all`,
    /// `read_correlated`, ...) of `stream` or of the whole log; run the read with
    /// [`StoreOp::read`].
    pub fn read(&self, operation: &'static str, stream: Option<&StreamId>) -> StoreOp<'_> {
        StoreOp {
            telemetry: self,
            operation,
            span: self.span(operation, stream),
            events: 0,
        }
    }
}

/// One traced store operation, opened by [`StoreTelemetry::append`] or
/// [`StoreTelemetry::read`].
#[derive(Debug)]
#[must_use = "a store operation does nothing until it runs its work"]
pub struct StoreOp<'t> {
    telemetry: &'t StoreTelemetry,
    operation: &'static str,
    span: tracing::Span,
    events: usize,
}

impl StoreOp<'_> {
    /// Runs the append `work` in the span and measures it.
    pub async fn append<F>(self, work: F) -> Result<AppendOutcome, Error>
    where
        F: Future<Output = Result<AppendOutcome, Error>>,
    {
        let n = self.events;
        self.run(|_| n, work).await
    }

    /// Runs the read `work` in the span and measures it.
    pub async fn read<F>(self, work: F) -> Result<Vec<RecordedEvent>, Error>
    where
        F: Future<Output = Result<Vec<RecordedEvent>, Error>>,
    {
        self.run(Vec::len, work).await
    }

    /// Runs the filtered read `work` in the span and measures it (the events it returned).
    pub async fn read_page<F>(self, work: F) -> Result<FilteredPage, Error>
    where
        F: Future<Output = Result<FilteredPage, Error>>,
    {
        self.run(|page: &FilteredPage| page.events.len(), work)
            .await
    }

    async fn run<T, F>(self, count: impl Fn(&T) -> usize, work: F) -> Result<T, Error>
    where
        F: Future<Output = Result<T, Error>>,
    {
        use tracing::Instrument;
        let StoreOp {
            telemetry,
            operation,
            span,
            ..
        } = self;
        let start = telemetry.metrics.as_ref().map(|_| Instant::now());
        let result = work.instrument(span.clone()).await;
        let outcome = match &result {
            Ok(value) => {
                if !span.is_disabled() {
                    span.record("flext.event.count", count(value) as u64);
                }
                "ok"
            }
            Err(e) => {
                span.record("otel.status_code", "ERROR");
                span.record("error.type", e.reason());
                "error"
            }
        };
        if let (Some(metrics), Some(start)) = (&telemetry.metrics, start) {
            let labels = [
                ("operation", operation),
                ("system", telemetry.system),
                ("outcome", outcome),
            ];
            metrics.observe(
                "flext.store.duration",
                start.elapsed().as_secs_f64(),
                &labels,
            );
            if let Ok(value) = &result {
                metrics.observe("flext.store.events", count(value) as f64, &labels);
            }
        }
        result
    }
}
