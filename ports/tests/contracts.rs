//! The ports' own promises, pinned where cargo-mutants found them unpinned by the ports'
//! unit tests: the shared helpers the SQL adapters build on (append checks, rejected
//! appends, row assembly, idempotency rows, fencing diagnoses), the default methods of
//! `EventStore` (run here on the in-memory store, which keeps them), ids, the JSON codec,
//! contributions, typed projections, URL redaction, the trace-context seam and store
//! telemetry.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use flext_domain::{
    CausationId, CorrelationId, DomainEvent, Error, ErrorCode, EventId, EventMetadata,
    ExpectedVersion, Id, NewEvent, Position, RecordedEvent, StreamId, StreamVersion,
};
use flext_memory::InMemoryEventStore;
use flext_ports::adapter::{
    StoredEvent, StoredRow, assemble_recorded, chrono_ttl, encode_error, refused_checkpoint,
    resolve_rejected_append, stored_claim, validate_append,
};
use flext_ports::{
    AppendEvents, AppendOutcome, AppendSignal, Claim, ConsumerRecord, Contributions, Decoded,
    EventCodec, EventProjection, EventStore, Health, HealthCheck, HealthFuture, IdGenerator,
    JsonCodec, Labels, Lease, MAX_EVENT_TYPE_LEN, MAX_EVENTS_PER_APPEND, Metrics, Projection,
    SequentialIds, Typed, Upcasters, UuidV7Ids, new_events, redact_url,
};
use serde::{Deserialize, Serialize};

fn stream(s: &str) -> StreamId {
    StreamId::new(s).expect("stream id")
}

fn event(t: &str) -> NewEvent {
    NewEvent::new(EventId::new(), t, "{}")
}

#[test]
fn last_position_is_the_last_one() {
    let out = AppendOutcome {
        stream_version: StreamVersion(2),
        positions: vec![Position(4), Position(9)],
    };
    assert_eq!(out.last_position(), Some(Position(9)));
    let none = AppendOutcome {
        stream_version: StreamVersion(0),
        positions: Vec::new(),
    };
    assert_eq!(none.last_position(), None);
}

#[test]
fn an_append_holds_up_to_the_limits_exactly() {
    let most: Vec<NewEvent> = (0..MAX_EVENTS_PER_APPEND).map(|_| event("e")).collect();
    validate_append(&most).expect("exactly the most events");
    let over: Vec<NewEvent> = (0..=MAX_EVENTS_PER_APPEND).map(|_| event("e")).collect();
    assert_eq!(
        validate_append(&over).expect_err("one too many").reason(),
        "TOO_MANY_EVENTS"
    );
    validate_append(&[event(&"t".repeat(MAX_EVENT_TYPE_LEN))]).expect("longest type");
    let e = validate_append(&[event(&"t".repeat(MAX_EVENT_TYPE_LEN + 1))])
        .expect_err("one byte too long");
    assert_eq!(e.field_violations()[0].field, "events[0].event_type");
}

fn stored(id: EventId, s: &str, version: u64, position: u64, e: &NewEvent) -> StoredEvent {
    StoredEvent {
        event_id: id,
        stream_id: stream(s),
        stream_version: StreamVersion(version),
        position: Position(position),
        event_type: e.event_type.clone(),
        schema_version: e.schema_version,
        payload: e.payload.clone(),
    }
}

#[test]
fn a_retry_that_expects_the_stream_to_exist_replays_only_from_the_same_stream() {
    let e = event("e");
    let here = [stored(e.event_id, "a", 3, 30, &e)];
    let out = resolve_rejected_append(
        &stream("a"),
        ExpectedVersion::StreamExists,
        StreamVersion(3),
        std::slice::from_ref(&e),
        &here,
    )
    .expect("the same append again");
    assert_eq!(out.positions, [Position(30)]);
    let elsewhere = [stored(e.event_id, "b", 3, 30, &e)];
    let refused = resolve_rejected_append(
        &stream("a"),
        ExpectedVersion::StreamExists,
        StreamVersion(3),
        &[e],
        &elsewhere,
    )
    .expect_err("stored in another stream");
    assert_eq!(refused.reason(), "EVENT_ID_REUSED");
}

fn row(s: &str, version: i64) -> StoredRow {
    StoredRow {
        position: version,
        event_id: uuid::Uuid::now_v7(),
        stream: s.to_owned(),
        version,
        event_type: "e".into(),
        schema_version: 1,
        payload: b"{}".to_vec(),
        correlation_id: None,
        causation_id: None,
        headers: None,
        recorded_at: Utc::now(),
        tags: Vec::new(),
    }
}

#[test]
fn consecutive_rows_of_one_stream_share_its_id_and_another_stream_gets_its_own() {
    let mut last = None;
    let a1 = assemble_recorded(row("a", 1), &mut last).expect("a1");
    let a2 = assemble_recorded(row("a", 2), &mut last).expect("a2");
    let b1 = assemble_recorded(row("b", 1), &mut last).expect("b1");
    assert_eq!(a2.stream_id.as_str(), "a");
    assert_eq!(b1.stream_id.as_str(), "b");
    assert!(
        std::ptr::eq(a1.stream_id.as_str(), a2.stream_id.as_str()),
        "one shared string for a run of one stream"
    );
}

#[test]
fn a_stored_error_round_trips_and_only_done_rows_are_done() {
    let e = Error::failed_precondition("NO_FUNDS", "too little").with_detail("balance", 3);
    let text = encode_error(&e);
    let back: Error = serde_json::from_str(&text).expect("the error's JSON");
    assert_eq!((back.code(), back.reason()), (e.code(), "NO_FUNDS"));
    let id = uuid::Uuid::now_v7();
    assert!(matches!(
        stored_claim(id, "pending", "t".into(), None, None),
        Claim::InProgress
    ));
    match stored_claim(id, "done", "t".into(), None, Some(text)) {
        Claim::Done(record) => {
            assert_eq!(
                record.outcome.expect_err("stored error").reason(),
                "NO_FUNDS"
            );
        }
        _ => panic!("a done row is done"),
    }
}

#[test]
fn id_generators_hand_out_distinct_ids_through_every_wrapper() {
    let seq = SequentialIds::default();
    assert_eq!(seq.next_uuid(), uuid::Uuid::from_u128(1));
    let by_ref: &dyn IdGenerator = &seq; // the impl for references
    assert_eq!(IdGenerator::next_uuid(&by_ref), uuid::Uuid::from_u128(2));
    let shared: Arc<SequentialIds> = Arc::new(SequentialIds::default());
    assert_eq!(shared.next_uuid(), uuid::Uuid::from_u128(1));
    let boxed: Box<dyn IdGenerator> = Box::new(SequentialIds::default());
    assert_eq!(boxed.next_uuid(), uuid::Uuid::from_u128(1));
    let id: Id<String> = seq.next_id();
    assert_eq!(id.as_uuid(), uuid::Uuid::from_u128(3));
    let (a, b) = (UuidV7Ids.next_uuid(), UuidV7Ids.next_uuid());
    assert_ne!(a, b);
    assert_eq!(a.get_version_num(), 7);
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Ev {
    Added { n: i64 },
}
impl DomainEvent for Ev {
    fn event_type(&self) -> &'static str {
        "added"
    }
    fn schema_version(&self) -> u32 {
        2
    }
    fn current_schema_version(t: &str) -> Option<u32> {
        (t == "added").then_some(2)
    }
    fn event_types() -> &'static [&'static str] {
        &["added"]
    }
}

#[test]
fn the_json_codec_encodes_upcasts_and_names_its_steps() {
    let codec = JsonCodec::with_upcasters(
        Upcasters::new()
            .with("added", 1, |mut v| {
                v["Added"]["n"] = v["Added"]["old"].take();
                Ok(v)
            })
            .expect("step"),
    );
    let bytes = EventCodec::<Ev>::encode(&codec, &Ev::Added { n: 4 }).expect("encode");
    assert_eq!(&bytes[..], br#"{"Added":{"n":4}}"#);
    let s = stream("s");
    let old = flext_domain::EventRef {
        stream_id: &s,
        stream_version: StreamVersion(1),
        event_type: "added",
        schema_version: 1,
        payload: br#"{"Added":{"old":9}}"#,
    };
    assert_eq!(
        EventCodec::<Ev>::decode(&codec, old).expect("upcast"),
        Ev::Added { n: 9 }
    );
    let upcasters = Upcasters::new().with("added", 1, Ok).expect("step");
    assert!(upcasters.has_step("added", 1));
    assert!(!upcasters.has_step("added", 2));
    assert!(!upcasters.has_step("other", 1));
    assert!(format!("{upcasters:?}").contains("added"));
    // Stored newer than this program reads: refused, not decoded.
    let newer = flext_domain::EventRef {
        schema_version: 3,
        payload: br#"{"Added":{"n":1}}"#,
        ..old
    };
    assert_eq!(
        EventCodec::<Ev>::decode(&JsonCodec::new(), newer)
            .expect_err("too new")
            .reason(),
        "SCHEMA_VERSION_TOO_NEW"
    );
}

#[test]
fn new_events_encode_every_event_with_fresh_ids_and_the_metadata() {
    let meta = EventMetadata::default().with_header("tenant", "t1");
    let out = new_events(
        &JsonCodec::new(),
        &[Ev::Added { n: 1 }, Ev::Added { n: 2 }],
        &meta,
    )
    .expect("encoded");
    assert_eq!(out.len(), 2);
    assert_ne!(out[0].event_id, out[1].event_id);
    assert_eq!(out[1].schema_version, 2);
    assert_eq!(out[0].metadata, meta);
    assert_eq!(&out[1].payload[..], br#"{"Added":{"n":2}}"#);
}

#[tokio::test]
async fn the_default_correlation_and_count_reads_scan_the_whole_log() {
    let store = InMemoryEventStore::new();
    let c = CorrelationId::new();
    let ours = EventMetadata::caused_by(c, CausationId::new());
    let theirs = EventMetadata::caused_by(CorrelationId::new(), CausationId::new());
    for i in 0..2_500u32 {
        let meta = if i % 1_000 == 7 { &ours } else { &theirs };
        store
            .append_events(
                &stream(&format!("s-{}", i % 3)),
                ExpectedVersion::Any,
                &[Ev::Added { n: i64::from(i) }],
                meta,
            )
            .await
            .expect("append");
    }
    let found = store.read_correlated(c, 10).await.expect("correlated");
    assert_eq!(found.len(), 3, "across pages of the global order");
    assert!(found.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(
        store.read_correlated(c, 2).await.expect("first two").len(),
        2
    );
    assert_eq!(
        store.count_after(Position::START).await.expect("count"),
        2_500
    );
    assert_eq!(
        store.count_after(Position(2_400)).await.expect("count"),
        100
    );
}

#[test]
fn a_refused_checkpoint_says_why() {
    let owner = uuid::Uuid::now_v7();
    let lease = Lease {
        consumer: "c".into(),
        owner,
        epoch: 4,
        expires_at: Utc::now(),
    };
    let reason = |row| {
        refused_checkpoint(&lease, row, Position(5))
            .reason()
            .to_owned()
    };
    assert_eq!(reason(None), "OWNERSHIP_LOST");
    assert_eq!(
        reason(Some((5, Some(owner), true, Position(1)))),
        "OWNERSHIP_LOST"
    );
    assert_eq!(
        reason(Some((4, Some(uuid::Uuid::now_v7()), true, Position(1)))),
        "OWNERSHIP_LOST"
    );
    let expired = refused_checkpoint(
        &lease,
        Some((4, Some(owner), false, Position(1))),
        Position(5),
    );
    assert!(expired.message().contains("expired"), "{expired}");
    assert_eq!(
        reason(Some((4, Some(owner), true, Position(9)))),
        "CHECKPOINT_BACKWARDS"
    );
    assert_eq!(
        chrono_ttl(Duration::from_millis(1_500)).num_milliseconds(),
        1_500
    );
    assert_eq!(chrono_ttl(Duration::MAX).num_days(), 36_500);
}

#[test]
fn a_consumer_is_unowned_since_its_lease_lapsed() {
    let now = Utc::now();
    let record = |owned, expires_at| ConsumerRecord {
        consumer: "c".into(),
        position: Position(0),
        epoch: 1,
        owner: None,
        acquired_at: None,
        expires_at,
        owned,
    };
    assert_eq!(
        record(true, Some(now)).unowned_for(now),
        Some(Duration::ZERO)
    );
    assert_eq!(record(false, None).unowned_for(now), None);
    let lapsed = now - chrono::TimeDelta::seconds(3);
    assert_eq!(
        record(false, Some(lapsed)).unowned_for(now),
        Some(Duration::from_secs(3))
    );
    // This process, named after its host as the kernel tells it.
    let instance = flext_ports::Instance::current();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .expect("a Linux host name");
    assert!(!host.is_empty());
    assert_eq!(instance.host, host);
    assert_eq!(instance.name, format!("{host}-{}", std::process::id()));
}

#[test]
fn contributions_are_taken_by_kind_in_order() {
    let mut c = Contributions::new();
    assert!(c.is_empty());
    c.add(1u32).add("a").add(2u32);
    let mut more = Contributions::new();
    more.add(3u32);
    c.extend(more);
    assert_eq!(c.len(), 4);
    assert!(!c.is_empty());
    assert!(format!("{c:?}").contains("u32"));
    assert_eq!(c.take::<u32>(), [1, 2, 3]);
    assert_eq!(c.len(), 1);
    assert_eq!(c.take::<&str>(), ["a"]);
    assert!(c.is_empty());
}

/// What it was handed: amount, position, `stream|key`, correlation.
type Seen = (i64, Position, String, Option<CorrelationId>);

struct Sum(Mutex<Vec<Seen>>);

impl EventProjection<()> for Sum {
    type Event = Ev;
    const NAME: &'static str = "sum";
    async fn apply(&self, _: &mut (), e: Decoded<'_, Ev>) -> Result<(), Error> {
        let Ev::Added { n } = e.event;
        self.0.lock().expect("lock").push((
            n,
            e.position(),
            format!("{}|{}", e.stream_id().as_str(), e.stream_key()),
            e.metadata().correlation_id,
        ));
        Ok(())
    }
}

struct Untyped;
impl Projection<()> for Untyped {
    fn name(&self) -> &str {
        "untyped"
    }
    async fn handle(&self, _: &mut (), _: &RecordedEvent) -> Result<(), Error> {
        Ok(())
    }
}

#[tokio::test]
async fn a_typed_projection_decodes_and_names_its_types() {
    let c = CorrelationId::new();
    let recorded = RecordedEvent {
        event_id: EventId::new(),
        stream_id: stream("acct-7"),
        stream_version: StreamVersion(1),
        position: Position(12),
        recorded_at: Utc::now(),
        event_type: "added".into(),
        schema_version: 2,
        payload: bytes::Bytes::from_static(br#"{"Added":{"n":5}}"#),
        metadata: EventMetadata::caused_by(c, CausationId::new()),
        tags: Vec::new(),
    };
    let typed = Typed(Sum(Mutex::new(Vec::new())));
    assert_eq!(Projection::<()>::name(&typed), "sum");
    assert_eq!(Projection::<()>::event_types(&typed), Some(&["added"][..]));
    Projection::<()>::handle(&typed, &mut (), &recorded)
        .await
        .expect("handled");
    assert_eq!(
        *typed.0.0.lock().expect("lock"),
        [(5, Position(12), "acct-7|7".to_owned(), Some(c))]
    );
    let mut bad = recorded.clone();
    bad.payload = bytes::Bytes::from_static(b"{");
    assert_eq!(
        Projection::<()>::handle(&typed, &mut (), &bad)
            .await
            .expect_err("corrupt")
            .code(),
        ErrorCode::DataLoss
    );
    assert_eq!(Projection::<()>::event_types(&Untyped), None);
    assert!(Projection::<()>::migrations(&Untyped).is_empty());
}

#[test]
fn urls_lose_their_passwords_and_secret_parameters_only() {
    assert_eq!(
        redact_url("postgres://u:pw@h:5/db?sslmode=require&password=pw&application_name=x"),
        "postgres://u:***@h:5/db?sslmode=require&password=***&application_name=x"
    );
    assert_eq!(
        redact_url("sqlite:///tmp/a.db?mode=ro"),
        "sqlite:///tmp/a.db?mode=ro"
    );
    assert_eq!(redact_url("x://h/?a=1&TOKEN=t&b"), "x://h/?a=1&TOKEN=***&b");
    assert_eq!(redact_url("x://u@h"), "x://u@h");
}

#[test]
fn append_signals_report_whether_they_are_live() {
    let signal = AppendSignal::new();
    let watcher = signal.watcher();
    assert!(signal.is_live() && watcher.is_live());
    signal.set_live(false);
    assert!(!signal.is_live() && !watcher.is_live());
}

struct Named;
impl HealthCheck for Named {
    fn name(&self) -> &str {
        "named"
    }
    fn check(&self) -> HealthFuture<'_> {
        Box::pin(async { Health::up() })
    }
}

#[test]
fn a_shared_health_check_keeps_its_name() {
    assert_eq!(Arc::new(Named).name(), "named");
}

#[derive(Default)]
struct Recorded(Mutex<Vec<String>>);
impl Metrics for Recorded {
    fn count(&self, name: &str, value: u64, _: Labels<'_>) {
        self.0
            .lock()
            .expect("lock")
            .push(format!("count {name} {value}"));
    }
    fn observe(&self, name: &str, value: f64, _: Labels<'_>) {
        self.0
            .lock()
            .expect("lock")
            .push(format!("observe {name} {value}"));
    }
    fn gauge(&self, name: &str, value: f64, _: Labels<'_>) {
        self.0
            .lock()
            .expect("lock")
            .push(format!("gauge {name} {value}"));
    }
}

#[test]
fn shared_metrics_forward_every_point() {
    let inner = Arc::new(Recorded::default());
    let shared: Arc<Arc<Recorded>> = Arc::new(Arc::clone(&inner));
    shared.count("c", 2, &[]);
    shared.observe("o", 0.5, &[]);
    shared.gauge("g", 3.0, &[]);
    assert_eq!(
        *inner.0.lock().expect("lock"),
        ["count c 2", "observe o 0.5", "gauge g 3"]
    );
}

#[test]
fn a_context_shows_its_ids_when_debugged() {
    let ctx = flext_ports::Context::new()
        .with_tenant(flext_domain::TenantId::new("acme").expect("a tenant"));
    let shown = format!("{ctx:?}");
    assert!(shown.contains("acme"), "{shown}");
    assert!(shown.contains(&ctx.correlation_id().to_string()), "{shown}");
}

struct Tables;
impl EventProjection<()> for Tables {
    type Event = Ev;
    const NAME: &'static str = "tables";
    const MIGRATIONS: &'static [&'static str] =
        &["CREATE TABLE t (id TEXT)", "ALTER TABLE t ADD n BIGINT"];
    async fn apply(&self, _: &mut (), _: Decoded<'_, Ev>) -> Result<(), Error> {
        Ok(())
    }
}

#[tokio::test]
async fn migrations_reach_the_store_which_may_refuse_them() {
    use flext_ports::ProjectionStore;
    let typed = Typed(Tables);
    assert_eq!(
        Projection::<()>::migrations(&typed),
        ["CREATE TABLE t (id TEXT)", "ALTER TABLE t ADD n BIGINT"]
    );
    // The in-memory store keeps no read model: no step is fine, any step is refused.
    let store = InMemoryEventStore::new();
    let mut tx = store.begin().await.expect("tx");
    store
        .migrate(&mut tx, "tables", &[])
        .await
        .expect("nothing to do");
    let e = store
        .migrate(&mut tx, "tables", Projection::<()>::migrations(&typed))
        .await
        .expect_err("no tables here");
    assert_eq!(
        (e.code(), e.reason()),
        (ErrorCode::Unimplemented, "MIGRATIONS_UNSUPPORTED")
    );
}
