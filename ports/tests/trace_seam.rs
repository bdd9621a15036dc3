//! The trace-context seam and store telemetry: what flext asks of an installed
//! [`Propagator`] (a recording one here; the OpenTelemetry one lives in `flext-otel` and
//! is tested there end to end), and the fields and measurements of a store's spans, read
//! by a `tracing` layer that keeps every recorded field.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use flext_domain::{
    CausationId, CorrelationId, Error, EventId, EventMetadata, NewEvent, Position, RecordedEvent,
    StreamId, StreamVersion,
};
use flext_ports::trace::{
    Propagator, continue_trace, current_traceparent, link_to_event, propagator, set_propagator,
    stored_traceparent,
};
use flext_ports::{AppendOutcome, Labels, Metrics, StoreTelemetry};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

const MINE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const STORED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Hands out one fixed context and writes down what it is asked to do.
#[derive(Clone, Default)]
struct Recording(Arc<Mutex<Vec<String>>>);

impl Propagator for Recording {
    fn traceparent(&self, _: &tracing::Span) -> Option<String> {
        Some(MINE.to_owned())
    }
    fn set_parent(&self, _: &tracing::Span, traceparent: &str) {
        self.0
            .lock()
            .expect("lock")
            .push(format!("parent {traceparent}"));
    }
    fn add_link(&self, _: &tracing::Span, traceparent: &str) {
        self.0
            .lock()
            .expect("lock")
            .push(format!("link {traceparent}"));
    }
}

/// Every field recorded on every span, by span name.
#[derive(Clone, Default)]
struct Fields(Arc<Mutex<Vec<BTreeMap<String, String>>>>);

struct Collect<'a>(&'a mut BTreeMap<String, String>);
impl Visit for Collect<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        );
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

struct Index(usize);

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Fields {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut map = BTreeMap::new();
        attrs.record(&mut Collect(&mut map));
        let mut all = self.0.lock().expect("lock");
        all.push(map);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Index(all.len() - 1));
        }
    }
    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        if let Some(span) = ctx.span(id)
            && let Some(Index(i)) = span.extensions().get::<Index>()
        {
            values.record(&mut Collect(&mut self.0.lock().expect("lock")[*i]));
        }
    }
}

#[derive(Default)]
struct Measured(Mutex<Vec<String>>);
impl Metrics for Measured {
    fn observe(&self, name: &str, value: f64, labels: Labels<'_>) {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let value = if name == "flext.store.duration" {
            "t".to_owned()
        } else {
            value.to_string()
        };
        self.0
            .lock()
            .expect("lock")
            .push(format!("{name} {value} {}", labels.join(",")));
    }
}

fn recorded(headers: &[(&str, &str)]) -> RecordedEvent {
    let mut metadata = EventMetadata::default();
    for (k, v) in headers {
        metadata = metadata.with_header(*k, *v);
    }
    RecordedEvent {
        event_id: EventId::new(),
        stream_id: StreamId::new("s").expect("id"),
        stream_version: StreamVersion(1),
        position: Position(1),
        recorded_at: Utc::now(),
        event_type: "e".into(),
        schema_version: 1,
        payload: bytes::Bytes::new(),
        metadata,
        tags: Vec::new(),
    }
}

/// One test: the propagator is process-wide, installed once.
#[tokio::test]
async fn the_seam_asks_the_propagator_and_store_spans_carry_their_fields() {
    let fields = Fields::default();
    let subscriber = tracing_subscriber::registry().with(fields.clone());
    let _default = tracing::subscriber::set_default(subscriber);

    // Before a propagator: nothing to ask.
    assert!(propagator().is_none());
    let span = tracing::info_span!("s");
    assert_eq!(span.in_scope(current_traceparent), None);

    let calls = Recording::default();
    assert!(set_propagator(calls.clone()), "the first install wins");
    assert!(
        !set_propagator(Recording::default()),
        "a second changes nothing"
    );
    assert!(propagator().is_some());
    assert_eq!(current_traceparent(), None, "no current span");
    assert_eq!(span.in_scope(current_traceparent).as_deref(), Some(MINE));

    // A stored context: the parent of a root span, a link under a current one.
    continue_trace(&tracing::info_span!("root"), STORED, true);
    span.in_scope(|| continue_trace(&tracing::info_span!("child"), STORED, true));
    span.in_scope(|| continue_trace(&tracing::info_span!("quiet"), STORED, false));
    let event = recorded(&[("traceparent", STORED)]);
    assert_eq!(stored_traceparent(&event), Some(STORED));
    link_to_event(&tracing::info_span!("batch"), &event);
    assert_eq!(
        stored_traceparent(&recorded(&[("traceparent", "nonsense")])),
        None
    );
    assert_eq!(stored_traceparent(&recorded(&[])), None);
    assert_eq!(
        *calls.0.lock().expect("lock"),
        [
            format!("parent {STORED}"),
            format!("link {STORED}"),
            format!("link {STORED}")
        ]
    );

    // Store telemetry: the span's fields, the count, the outcome and the measurements.
    let measured = Arc::new(Measured::default());
    let telemetry = StoreTelemetry::new("sqlite", "flext_events")
        .with_namespace("bank.db")
        .with_metrics(measured.clone());
    assert!(format!("{telemetry:?}").contains("sqlite"));
    let stream = StreamId::new("account-1").expect("id");
    let c = CorrelationId::new();
    let events = vec![
        NewEvent::new(EventId::new(), "a", "1")
            .with_metadata(EventMetadata::caused_by(c, CausationId::new())),
        NewEvent::new(EventId::new(), "b", "2"),
    ];
    let out = telemetry
        .append(&stream, &events)
        .append(async {
            Ok(AppendOutcome {
                stream_version: StreamVersion(2),
                positions: vec![Position(1), Position(2)],
            })
        })
        .await
        .expect("ok");
    assert_eq!(out.positions.len(), 2);
    let read = telemetry
        .read("read_all", None)
        .read(async { Ok(vec![recorded(&[]), recorded(&[]), recorded(&[])]) })
        .await
        .expect("read");
    assert_eq!(read.len(), 3);
    let failed = telemetry
        .read("read_stream", Some(&stream))
        .read(async { Err(Error::unavailable("STORE_UNAVAILABLE", "down")) })
        .await
        .expect_err("failed");
    assert_eq!(failed.reason(), "STORE_UNAVAILABLE");

    let spans = fields.0.lock().expect("lock").clone();
    let store: Vec<&BTreeMap<String, String>> = spans
        .iter()
        .filter(|f| f.contains_key("db.system.name"))
        .collect();
    assert_eq!(store.len(), 3);
    let get = |i: usize, k: &str| store[i].get(k).cloned().unwrap_or_default();
    assert_eq!(get(0, "otel.name"), "append flext_events");
    assert_eq!(get(0, "db.namespace"), "bank.db");
    assert_eq!(get(0, "flext.stream"), "account-1");
    assert_eq!(get(0, "flext.event.count"), "2");
    assert_eq!(get(0, "messaging.message.conversation_id"), c.to_string());
    assert_eq!(get(1, "otel.name"), "read_all flext_events");
    assert_eq!(get(1, "flext.event.count"), "3");
    assert!(!store[1].contains_key("flext.stream"));
    assert_eq!(get(2, "otel.status_code"), "ERROR");
    assert_eq!(get(2, "error.type"), "STORE_UNAVAILABLE");
    assert!(!store[2].contains_key("flext.event.count"));
    assert_eq!(
        *measured.0.lock().expect("lock"),
        [
            "flext.store.duration t operation=append,system=sqlite,outcome=ok",
            "flext.store.events 2 operation=append,system=sqlite,outcome=ok",
            "flext.store.duration t operation=read_all,system=sqlite,outcome=ok",
            "flext.store.events 3 operation=read_all,system=sqlite,outcome=ok",
            "flext.store.duration t operation=read_stream,system=sqlite,outcome=error",
        ]
    );
}
