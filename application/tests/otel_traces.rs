//! Traces on OpenTelemetry: the span tree of a command that records events which a
//! projection then handles, read from the SDK's in-memory span exporter, on a SQLite file.
//! The cross-process case runs the projection (and an event handler that dispatches a
//! follow-up command) from a fresh store and runner that share nothing with the first but
//! the database file (and the process's tracer, which holds no trace context once every
//! span has ended): the link travels in the stored `traceparent`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flext_application::{
    EventBus, Pipeline, ProjectionRunner, Registry, Repository, TracingBehavior,
};
use flext_domain::{
    Aggregate, DomainEvent, Error, Id, Position, RecordedEvent, StreamId, StreamVersion,
};
use flext_ports::{
    Command, CommandHandler, Context, EventHandler, EventStore, Projection, ReadDirection,
    TRACEPARENT_HEADER,
};
use flext_sqlite::{SqliteEventStore, SqliteWriteTransaction};
use opentelemetry::trace::{SpanId, SpanKind, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde::{Deserialize, Serialize};
use tracing_subscriber::layer::SubscriberExt as _;

#[derive(Debug, Default)]
struct Account {
    balance: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum AccountEvent {
    Credited { amount: i64 },
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> &'static str {
        "account.credited"
    }
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Event = AccountEvent;
    fn apply(&mut self, AccountEvent::Credited { amount }: &AccountEvent) {
        self.balance += amount;
    }
}

#[derive(Debug, Clone)]
struct Credit {
    account: Id<Account>,
    amount: i64,
}

impl Command for Credit {
    type Output = ();
    const NAME: &'static str = "account.credit";
}

struct CreditHandler(Arc<Repository<Account, SqliteEventStore>>);

impl CommandHandler<Credit> for CreditHandler {
    async fn handle(&self, c: Credit, ctx: &Context) -> Result<(), Error> {
        self.0
            .execute(c.account, ctx, |_| {
                Ok(vec![AccountEvent::Credited { amount: c.amount }])
            })
            .await
            .map(|_| ())
    }
}

/// Counts events in a table of the same file, in the projection's transaction.
#[derive(Default)]
struct Tally;

impl Projection<SqliteWriteTransaction> for Tally {
    fn name(&self) -> &str {
        "tally"
    }
    async fn handle(
        &self,
        tx: &mut SqliteWriteTransaction,
        _event: &RecordedEvent,
    ) -> Result<(), Error> {
        sqlx::query("CREATE TABLE IF NOT EXISTS tally (n INTEGER NOT NULL)")
            .execute(tx.connection())
            .await
            .map_err(|e| Error::internal("TALLY", e.to_string()))?;
        sqlx::query("INSERT INTO tally (n) VALUES (1)")
            .execute(tx.connection())
            .await
            .map_err(|e| Error::internal("TALLY", e.to_string()))?;
        Ok(())
    }
}

/// Every span the exporter holds once the spans named `expected` have ended. A span ends
/// when its last handle drops, and sqlx's SQLite worker thread holds the current span
/// while it runs a statement, dropping it just after it answers: so wait (up to 10 s)
/// rather than read the exporter at once.
async fn finished(
    provider: &SdkTracerProvider,
    exporter: &InMemorySpanExporter,
    expected: &[&str],
) -> Vec<SpanData> {
    for _ in 0..1_000 {
        provider.force_flush().expect("flush");
        let spans = exporter.get_finished_spans().expect("spans");
        if expected.iter().all(|n| spans.iter().any(|s| s.name == *n)) {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let spans = exporter.get_finished_spans().expect("spans");
    panic!(
        "expected spans {expected:?}, ended: {:?}; still open: {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>(),
        OPEN.lock().unwrap_or_else(|p| p.into_inner())
    );
}

fn attrs(span: &SpanData) -> BTreeMap<String, String> {
    span.attributes
        .iter()
        .map(|kv| (kv.key.to_string(), kv.value.to_string()))
        .collect()
}

fn named<'s>(spans: &'s [SpanData], name: &str) -> Vec<&'s SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

/// Spans opened and not yet closed (id, name, where it was entered last), to say in a
/// failure which span is still open and who holds it.
static OPEN: std::sync::Mutex<BTreeMap<u64, String>> = std::sync::Mutex::new(BTreeMap::new());

/// Records [`OPEN`].
struct OpenSpans;

impl<S> tracing_subscriber::Layer<S> for OpenSpans
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        OPEN.lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.into_u64(), attrs.metadata().name().to_owned());
    }

    fn on_enter(&self, id: &tracing::span::Id, _: tracing_subscriber::layer::Context<'_, S>) {
        let thread = std::thread::current();
        let at = thread.name().unwrap_or("unnamed").to_owned();
        if let Some(entry) = OPEN
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&id.into_u64())
        {
            let name = entry.split(" @").next().unwrap_or_default().to_owned();
            *entry = format!("{name} @{at}");
        }
    }

    fn on_close(&self, id: tracing::span::Id, _: tracing_subscriber::layer::Context<'_, S>) {
        OPEN.lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id.into_u64());
    }
}

/// The process-wide tracer provider and its in-memory exporter.
static OTEL: std::sync::OnceLock<(SdkTracerProvider, InMemorySpanExporter)> =
    std::sync::OnceLock::new();

/// The tracer provider exporting to memory, installed in the process-wide subscriber,
/// with its exporter emptied: what it holds from now on is the caller's.
///
/// The subscriber is the *global* default, never a thread-local one: sqlx runs each
/// SQLite statement on a worker thread of its own, which drops the caller's span there,
/// and `tracing-subscriber`'s registry releases a closed span's reference to its parent
/// through the dispatcher that is the default *on the thread that closes it*. With a
/// thread-local subscriber (`set_default`) a child span closed on a worker thread (the
/// append span, after its COMMIT) therefore never released its parent, and the command's
/// span stayed open for good, now and then, depending on which thread dropped the child
/// last. A service installs its subscriber globally, so the tests do too. The tests run
/// one at a time, and each waits until every span it started has ended, so what the
/// exporter holds after the reset is the caller's alone.
///
/// Context activation is off: flext reads span contexts itself and does not need it.
fn tracing_to_memory() -> (InMemorySpanExporter, SdkTracerProvider) {
    let (provider, exporter) = OTEL.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_opentelemetry::layer()
                    .with_tracer(provider.tracer("flext-test"))
                    .with_context_activation(false),
            )
            .with(OpenSpans);
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
        flext_otel::install();
        (provider, exporter)
    });
    exporter.reset();
    OPEN.lock().unwrap_or_else(|p| p.into_inner()).clear();
    (exporter.clone(), provider.clone())
}

fn temp_db(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("flext-otel-traces-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

async fn credit_once(store: &SqliteEventStore, account: Id<Account>) -> Context {
    let repo = Arc::new(Repository::<Account, _>::new(store.clone()));
    let bus = Registry::new()
        .command::<Credit, _>(CreditHandler(repo))
        .command_bus(Pipeline::new().layer(TracingBehavior))
        .expect("bus");
    let ctx = Context::new();
    bus.dispatch(Credit { account, amount: 7 }, &ctx)
        .await
        .expect("credit");
    ctx
}

async fn stored(store: &SqliteEventStore, account: Id<Account>) -> Vec<RecordedEvent> {
    store
        .read_stream(
            &StreamId::for_aggregate(account),
            StreamVersion(1),
            10,
            ReadDirection::Forward,
        )
        .await
        .expect("read")
}

/// Closes `store` and drops it: a SQLite worker thread may keep the span of the last
/// statement it ran until it runs another (a pooled reader that is not used again would
/// keep a command's span open for good); closed connections end their workers, and with
/// them every span they held.
async fn close(store: SqliteEventStore) {
    store.close().await.expect("close");
    drop(store);
}

async fn project(store: &SqliteEventStore, until: Position) {
    let runner = ProjectionRunner::new(store.clone())
        .register(Tally)
        .expect("register")
        .start();
    runner
        .wait_for("tally", until, Duration::from_secs(10))
        .await
        .expect("projected");
    runner.shutdown().await;
}

/// The tests of this file run one at a time: they share the process-wide subscriber and
/// exporter, and each reads everything the exporter holds.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn command_append_and_projection_batch_form_one_linked_trace() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let path = temp_db("in-process.db");
    let (exporter, provider) = tracing_to_memory();
    let store = SqliteEventStore::open(&path).await.expect("open");
    let account = Id::new();
    let ctx = credit_once(&store, account).await;
    let events = stored(&store, account).await;
    project(&store, events[0].position).await;
    close(store).await;
    let spans = finished(
        &provider,
        &exporter,
        &[
            "command account.credit",
            "append flext_events",
            "process tally",
        ],
    )
    .await;

    // The command: a root span with the messaging attributes.
    let [command] = named(&spans, "command account.credit")[..] else {
        panic!(
            "one command span: {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
    };
    assert_eq!(command.parent_span_id, SpanId::INVALID);
    assert_eq!(command.span_kind, SpanKind::Internal);
    let a = attrs(command);
    assert_eq!(a["messaging.system"], "flext");
    assert_eq!(a["messaging.operation.type"], "process");
    assert_eq!(a["messaging.destination.name"], "account.credit");
    assert_eq!(
        a["messaging.message.conversation_id"],
        ctx.correlation_id().to_string()
    );
    assert_eq!(a["flext.outcome"], "ok");
    let trace = command.span_context.trace_id();

    // The append: a client span, child of the command, with the database attributes.
    let appends = named(&spans, "append flext_events");
    let [append] = appends[..] else {
        panic!("one append span, got {}", appends.len());
    };
    assert_eq!(append.parent_span_id, command.span_context.span_id());
    assert_eq!(append.span_context.trace_id(), trace);
    assert_eq!(append.span_kind, SpanKind::Client);
    let a = attrs(append);
    assert_eq!(a["db.system.name"], "sqlite");
    assert_eq!(a["db.operation.name"], "append");
    assert_eq!(a["db.collection.name"], "flext_events");
    assert_eq!(a["flext.stream"], StreamId::for_aggregate(account).as_str());
    assert_eq!(a["flext.event.count"], "1");
    assert_eq!(
        a["messaging.message.conversation_id"],
        ctx.correlation_id().to_string()
    );

    // The event carries the command span's context.
    let expected = format!("00-{}-{}-01", trace, command.span_context.span_id());
    assert_eq!(
        events[0].metadata.headers.get(TRACEPARENT_HEADER),
        Some(&expected)
    );

    // The projection batch: a consumer span in a trace of its own, linked to the command.
    let batches = named(&spans, "process tally");
    let [batch] = batches[..] else {
        panic!("one batch span, got {}", batches.len());
    };
    assert_eq!(batch.span_kind, SpanKind::Consumer);
    assert_ne!(batch.span_context.trace_id(), trace);
    let a = attrs(batch);
    assert_eq!(a["messaging.destination.name"], "tally");
    assert_eq!(a["messaging.batch.message_count"], "1");
    let links: Vec<(TraceId, SpanId)> = batch
        .links
        .iter()
        .map(|l| (l.span_context.trace_id(), l.span_context.span_id()))
        .collect();
    assert_eq!(links, vec![(trace, command.span_context.span_id())]);
}

/// An event handler that dispatches a follow-up command for each credit.
struct FollowUp(flext_application::CommandBus);

impl EventHandler<RecordedEvent> for FollowUp {
    async fn handle(&self, event: &RecordedEvent, ctx: &Context) -> Result<(), Error> {
        let account = event
            .stream_id
            .as_str()
            .strip_prefix("account-")
            .and_then(|id| Id::<Account>::parse(id).ok());
        let Some(account) = account else {
            return Err(Error::invalid_argument("NOT_AN_ACCOUNT", "no account id"));
        };
        self.0
            .dispatch(Credit { account, amount: 1 }, &ctx.child())
            .await
    }
}

#[tokio::test]
async fn a_fresh_process_links_its_batches_and_continues_its_follow_ups_from_the_stored_context() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let path = temp_db("cross-process.db");
    let account = Id::new();

    // "Process" one: the command, then everything is dropped.
    let (command_trace, command_span) = {
        let (exporter, provider) = tracing_to_memory();
        let store = SqliteEventStore::open(&path).await.expect("open");
        credit_once(&store, account).await;
        close(store).await;
        let spans = finished(&provider, &exporter, &["command account.credit"]).await;
        let [command] = named(&spans, "command account.credit")[..] else {
            panic!("one command span");
        };
        (
            command.span_context.trace_id(),
            command.span_context.span_id(),
        )
    };

    // "Process" two: an emptied exporter, a new store on the same file.
    let (exporter, provider) = tracing_to_memory();
    let store = SqliteEventStore::open(&path).await.expect("reopen");
    let events = stored(&store, account).await;
    project(&store, events[0].position).await;

    // An event handler runs the stored event with no span current: its span continues the
    // command's trace, and the follow-up command it dispatches is its child.
    let repo = Arc::new(Repository::<Account, _>::new(store.clone()));
    let commands = Registry::new()
        .command::<Credit, _>(CreditHandler(repo))
        .command_bus(Pipeline::new().layer(TracingBehavior))
        .expect("bus");
    let handlers: EventBus = Registry::new()
        .event::<RecordedEvent, _>(FollowUp(commands))
        .event_bus();
    let outcomes = handlers
        .publish(&events[0], &Context::for_event(&events[0]))
        .await;
    assert!(outcomes.iter().all(|o| o.result.is_ok()), "{outcomes:?}");
    let after = stored(&store, account).await;
    drop(handlers); // its command bus and repository hold clones of the store
    close(store).await;

    let spans = finished(
        &provider,
        &exporter,
        &[
            "process tally",
            "event RecordedEvent",
            "command account.credit",
        ],
    )
    .await;
    let [batch] = named(&spans, "process tally")[..] else {
        panic!("one batch span");
    };
    let links: Vec<(TraceId, SpanId)> = batch
        .links
        .iter()
        .map(|l| (l.span_context.trace_id(), l.span_context.span_id()))
        .collect();
    assert_eq!(links, vec![(command_trace, command_span)]);

    let [handler] = named(&spans, "event RecordedEvent")[..] else {
        panic!("one event span");
    };
    assert_eq!(handler.span_kind, SpanKind::Consumer);
    assert_eq!(handler.span_context.trace_id(), command_trace);
    assert_eq!(handler.parent_span_id, command_span);
    assert!(handler.parent_span_is_remote);

    let [follow_up] = named(&spans, "command account.credit")[..] else {
        panic!("one follow-up command span");
    };
    assert_eq!(follow_up.span_context.trace_id(), command_trace);
    assert_eq!(follow_up.parent_span_id, handler.span_context.span_id());
    assert_eq!(
        attrs(follow_up)["flext.causation_id"],
        events[0].event_id.to_string()
    );

    // And the follow-up's own event carries the follow-up's context: the chain goes on.
    let expected = format!(
        "00-{}-{}-01",
        command_trace,
        follow_up.span_context.span_id()
    );
    assert_eq!(
        after[1].metadata.headers.get(TRACEPARENT_HEADER),
        Some(&expected)
    );
}

struct Audit {
    fail_start: bool,
}

impl flext_ports::Plugin for Audit {
    fn name(&self) -> &str {
        if self.fail_start { "broken" } else { "audit" }
    }
    fn version(&self) -> &str {
        "1.0.0"
    }
    fn start(&self) -> flext_ports::PluginFuture<'_> {
        let fail = self.fail_start;
        Box::pin(async move {
            if fail {
                Err(Error::unavailable(
                    "NO_DISK",
                    "the audit log is not writable",
                ))
            } else {
                Ok(())
            }
        })
    }
}

#[tokio::test]
async fn plugin_lifecycle_hooks_are_spans_with_their_outcome() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (exporter, provider) = tracing_to_memory();
    let mut plugins = flext_application::PluginRegistry::new();
    plugins
        .register(Audit { fail_start: false })
        .expect("register");
    plugins.start_all().await.expect("start");
    plugins.stop_all().await.expect("stop");
    let mut failing = flext_application::PluginRegistry::new();
    failing
        .register(Audit { fail_start: true })
        .expect("register");
    failing.start_all().await.expect_err("start fails");

    let spans = finished(&provider, &exporter, &["stop audit", "start broken"]).await;
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
    for name in [
        "init audit",
        "start audit",
        "stop audit",
        "init broken",
        "start broken",
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    let [failed] = named(&spans, "start broken")[..] else {
        panic!("one failed start");
    };
    let a = attrs(failed);
    assert_eq!(a["flext.plugin.name"], "broken");
    assert_eq!(a["flext.plugin.hook"], "start");
    assert_eq!(a["error.type"], "NO_DISK");
    assert_eq!(failed.status, opentelemetry::trace::Status::error(""));
}
