//! Dispatch overhead: a no-op command through the bus (no behaviors, three behaviors, the
//! metrics and tracing layers without and with OpenTelemetry behind them) next to a direct
//! call of the same handler, and a container resolve next to a `Result::map` of the same
//! value. Futures are polled once with a no-op waker: the handler is ready at once, so
//! what is measured is the bus, not a runtime.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context as TaskContext, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use std::time::Duration;

use flext_application::{
    MetricsBehavior, Pipeline, QueryCache, Registry, RetryBehavior, Services, TracingBehavior,
    ValidationBehavior,
};
use flext_domain::Error;
use flext_ports::{Command, CommandHandler, Context, Query, QueryHandler};
use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::layer::SubscriberExt as _;

#[derive(Clone)]
struct Noop(u64);

impl Command for Noop {
    type Output = u64;
    const NAME: &'static str = "bench.noop";
}

struct NoopHandler;

impl CommandHandler<Noop> for NoopHandler {
    async fn handle(&self, command: Noop, _: &Context) -> Result<u64, Error> {
        Ok(command.0)
    }
}

fn ready<F: Future>(f: F) -> F::Output {
    let mut cx = TaskContext::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("the no-op handler is ready at once"),
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Lookup(u64);

impl Query for Lookup {
    type Output = u64;
    const NAME: &'static str = "bench.lookup";
}

impl QueryHandler<Lookup> for NoopHandler {
    async fn handle(&self, query: Lookup, _: &Context) -> Result<u64, Error> {
        Ok(query.0)
    }
}

/// Receives finished spans and drops them: what is measured is making and ending them.
#[derive(Debug)]
struct DiscardSpans;

impl opentelemetry_sdk::trace::SpanExporter for DiscardSpans {
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        drop(batch);
        Ok(())
    }
}

struct Config {
    limit: u64,
}

fn dispatch(c: &mut Criterion) {
    let ctx = Context::new();
    let registry = Registry::new().command::<Noop, _>(NoopHandler);
    let bare = registry.command_bus(Pipeline::new()).expect("bus");
    let layered = registry
        .command_bus(
            Pipeline::new()
                .layer(RetryBehavior::default())
                .layer(MetricsBehavior::new(()))
                .layer(ValidationBehavior),
        )
        .expect("bus");
    // The metrics layer alone, recording nowhere and on an OpenTelemetry meter (SDK
    // provider with a reader that is never flushed during the run).
    let noop_metrics = registry
        .command_bus(Pipeline::new().layer(MetricsBehavior::new(())))
        .expect("bus");
    let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_reader(
            opentelemetry_sdk::metrics::PeriodicReader::builder(
                opentelemetry_sdk::metrics::InMemoryMetricExporter::default(),
            )
            .build(),
        )
        .build();
    let otel = registry
        .command_bus(
            Pipeline::new().layer(MetricsBehavior::new(flext_otel::OtelMetrics::new(
                opentelemetry::metrics::MeterProvider::meter(&provider, "bench"),
            ))),
        )
        .expect("bus");
    let handler = NoopHandler;

    let mut group = c.benchmark_group("command");
    group.bench_function("direct handler call", |b| {
        b.iter(|| {
            ready(CommandHandler::<Noop>::handle(
                &handler,
                Noop(black_box(7)),
                &ctx,
            ))
        })
    });
    group.bench_function("bus, no behaviors", |b| {
        b.iter(|| ready(bare.dispatch(Noop(black_box(7)), &ctx)))
    });
    group.bench_function("bus, three behaviors", |b| {
        b.iter(|| ready(layered.dispatch(Noop(black_box(7)), &ctx)))
    });
    group.bench_function("bus, MetricsBehavior recording nowhere", |b| {
        b.iter(|| ready(noop_metrics.dispatch(Noop(black_box(7)), &ctx)))
    });
    group.bench_function("bus, MetricsBehavior on OpenTelemetry", |b| {
        b.iter(|| ready(otel.dispatch(Noop(black_box(7)), &ctx)))
    });

    // Tracing: the TracingBehavior with no subscriber, then exported through
    // tracing-opentelemetry (every span sampled, ended and handed to an exporter that
    // drops it), then traces and metrics together.
    let traced = registry
        .command_bus(Pipeline::new().layer(TracingBehavior))
        .expect("bus");
    group.bench_function("bus, TracingBehavior, no subscriber", |b| {
        b.iter(|| ready(traced.dispatch(Noop(black_box(7)), &ctx)))
    });
    let tracer_provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_simple_exporter(DiscardSpans)
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(tracer_provider.tracer("bench")));
    let observed = registry
        .command_bus(
            Pipeline::new()
                .layer(TracingBehavior)
                .layer(MetricsBehavior::new(flext_otel::OtelMetrics::new(
                    opentelemetry::metrics::MeterProvider::meter(&provider, "bench"),
                ))),
        )
        .expect("bus");
    tracing::subscriber::with_default(subscriber, || {
        flext_otel::install();
        group.bench_function("bus, TracingBehavior on OpenTelemetry", |b| {
            b.iter(|| ready(traced.dispatch(Noop(black_box(7)), &ctx)))
        });
        group.bench_function(
            "bus, TracingBehavior + MetricsBehavior on OpenTelemetry",
            |b| b.iter(|| ready(observed.dispatch(Noop(black_box(7)), &ctx))),
        );
    });
    group.finish();

    let cache = QueryCache::<Lookup>::new(1_000, Duration::from_secs(3_600));
    let queries = Registry::new()
        .query::<Lookup, _>(NoopHandler)
        .query_bus(Pipeline::new().layer(cache.layer()))
        .expect("bus");
    ready(queries.ask(Lookup(7), &ctx)).expect("fill the cache");
    let mut group = c.benchmark_group("query");
    group.bench_function("cache hit", |b| {
        b.iter(|| ready(queries.ask(Lookup(black_box(7)), &ctx)))
    });
    group.finish();

    let services = Services::builder().singleton(Config { limit: 10 }).build();
    let value: Result<Config, Error> = Ok(Config { limit: 10 });
    let mut group = c.benchmark_group("container");
    group.bench_function("resolve a singleton", |b| {
        b.iter(|| black_box(&services).get::<Config>().map(|c| c.limit))
    });
    group.bench_function("Result::map of the same value", |b| {
        b.iter(|| black_box(&value).as_ref().map(|c| c.limit))
    });
    group.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
