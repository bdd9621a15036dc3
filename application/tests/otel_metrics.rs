//! The metrics port on OpenTelemetry: a known sequence of commands (through the
//! `MetricsBehavior`), store appends and projection batches produces exactly these metric points in the
//! SDK's in-memory exporter.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flext_application::{
    MetricsBehavior, Pipeline, PoisonPolicy, ProjectionOptions, ProjectionRunner, Registry,
};
use flext_domain::{Error, EventId, ExpectedVersion, NewEvent, StreamId};
use flext_memory::InMemoryEventStore;
use flext_otel::OtelMetrics;
use flext_ports::{Command, CommandHandler, Context, EventStore};
use opentelemetry::metrics::MeterProvider;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use support::Backend;

#[derive(Clone)]
struct Open(i64);
impl Command for Open {
    type Output = ();
    const NAME: &'static str = "open";
}
struct Opener;
impl CommandHandler<Open> for Opener {
    async fn handle(&self, c: Open, _: &Context) -> Result<(), Error> {
        if c.0 < 0 {
            return Err(Error::invalid_argument("NEGATIVE", "must not be negative"));
        }
        Ok(())
    }
}

/// Name -> (attributes as "k=v,..." -> value): sums, the last gauge value, histogram counts.
fn points(exporter: &InMemoryMetricExporter) -> BTreeMap<String, BTreeMap<String, f64>> {
    let mut out: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for rm in exporter.get_finished_metrics().expect("metrics") {
        for scope in rm.scope_metrics() {
            for m in scope.metrics() {
                let entry = out.entry(m.name().to_owned()).or_default();
                let key = |attrs: &mut dyn Iterator<Item = &opentelemetry::KeyValue>| {
                    let mut a: Vec<String> =
                        attrs.map(|kv| format!("{}={}", kv.key, kv.value)).collect();
                    a.sort();
                    a.join(",")
                };
                match m.data() {
                    AggregatedMetrics::U64(MetricData::Sum(s)) => {
                        for p in s.data_points() {
                            entry.insert(key(&mut p.attributes()), p.value() as f64);
                        }
                    }
                    AggregatedMetrics::F64(MetricData::Gauge(g)) => {
                        for p in g.data_points() {
                            entry.insert(key(&mut p.attributes()), p.value());
                        }
                    }
                    AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                        for p in h.data_points() {
                            let k = key(&mut p.attributes());
                            entry.insert(format!("{k}|sum"), p.sum());
                            entry.insert(k, p.count() as f64);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_and_projection_batches_produce_these_points() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let metrics = Arc::new(OtelMetrics::new(provider.meter("flext-test")));

    // Commands: two succeed, one is refused.
    let bus = Registry::new()
        .command::<Open, _>(Opener)
        .command_bus(Pipeline::new().layer(MetricsBehavior::new(metrics.clone())))
        .expect("bus");
    for n in [1, 2, -1] {
        let _ = bus.dispatch(Open(n), &Context::new()).await;
    }

    // Projection batches: 7 events in batches of 3 (3, 3, 1), one of them poison.
    let store = InMemoryEventStore::new().with_metrics(metrics.clone());
    let model = store.model("totals").await;
    model
        .knobs
        .poison
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let mut events: Vec<NewEvent> = (1..=6)
        .map(|i| NewEvent::new(EventId::new(), "added", i.to_string()))
        .collect();
    events.insert(4, NewEvent::new(EventId::new(), "poison", "0"));
    let out = store
        .append(
            &StreamId::new("s").expect("id"),
            ExpectedVersion::NoStream,
            events,
        )
        .await
        .expect("append");
    // An append that conflicts is measured as an error.
    store
        .append(
            &StreamId::new("s").expect("id"),
            ExpectedVersion::NoStream,
            vec![NewEvent::new(EventId::new(), "added", "1")],
        )
        .await
        .expect_err("the stream exists");
    let projections = ProjectionRunner::new(store.clone())
        .with_metrics(metrics.clone())
        .register_with(
            model,
            ProjectionOptions {
                batch_size: 3,
                max_attempts: 1,
                on_poison: PoisonPolicy::Park,
                ..ProjectionOptions::default()
            },
        )
        .expect("register")
        .start();
    // Caught up, with the poison event parked (which `wait_for` names).
    let parked = projections
        .wait_for("totals", out.positions[6], Duration::from_secs(10))
        .await
        .expect_err("an event was parked");
    assert_eq!(parked.reason(), "EVENTS_PARKED", "{parked}");
    projections.status("totals").await.expect("status");
    projections.shutdown().await;

    provider.force_flush().expect("flush");
    let p = points(&exporter);
    let dispatch = &p["flext.dispatch.count"];
    assert_eq!(dispatch["kind=command,message_type=open,outcome=ok"], 2.0);
    assert_eq!(
        dispatch["kind=command,message_type=open,outcome=INVALID_ARGUMENT"],
        1.0
    );
    assert_eq!(
        p["flext.dispatch.duration"]["kind=command,message_type=open,outcome=ok"],
        2.0
    );
    assert_eq!(p["flext.projection.events"]["projection=totals"], 7.0);
    assert_eq!(p["flext.projection.dead_letters"]["projection=totals"], 1.0);
    assert_eq!(
        p["flext.projection.position"]["projection=totals"],
        out.positions[6].get() as f64
    );
    assert_eq!(p["flext.projection.lag.events"]["projection=totals"], 0.0);
    assert_eq!(p["flext.projection.lag.seconds"]["projection=totals"], 0.0);
    // Batches: [1,2,3]; the read [4, poison, 5] commits [4], parks the poison (a batch of
    // one) and commits [5]; the next read [6]: five batch observations.
    assert_eq!(p["flext.projection.batch.size"]["projection=totals"], 5.0);

    // The store: one append of 7 events, one refused; reads by the projection.
    let store_events = &p["flext.store.events"];
    assert_eq!(
        store_events["operation=append,outcome=ok,system=memory"],
        1.0
    );
    assert_eq!(
        store_events["operation=append,outcome=ok,system=memory|sum"],
        7.0
    );
    let durations = &p["flext.store.duration"];
    assert_eq!(durations["operation=append,outcome=ok,system=memory"], 1.0);
    assert_eq!(
        durations["operation=append,outcome=error,system=memory"],
        1.0
    );
    assert!(durations["operation=read_all,outcome=ok,system=memory"] >= 2.0);
    assert_eq!(
        store_events["operation=read_all,outcome=ok,system=memory|sum"], 7.0,
        "every event read once by the projection"
    );
}
