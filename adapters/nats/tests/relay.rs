//! The relay on a real NATS with JetStream (`FLEXT_NATS_URL`, which `./scripts/test`
//! provides) from SQLite and PostgreSQL stores: every selected event published once, with
//! its id as `Nats-Msg-Id` and its metadata as headers, in order per stream; events
//! appended while it runs follow; a rebuild that hands everything over again stores
//! nothing twice, also after JetStream's duplicate window has passed.

use std::time::Duration;

use flext::application::{ProjectionRunner, Projections, RebuildFrom, Relay, Select};
use flext::ports::{EventStore, Instance, ProjectionStore, WatchAppends};
use flext::postgres::PgEventStore;
use flext::sqlite::SqliteEventStore;
use flext::{CorrelationId, EventId, EventMetadata, ExpectedVersion, NewEvent, Position, StreamId};
use flext_nats::{JetStream, StreamPublisher};

mod common;
use common::{nats_url, stored};
use serde_json::json;

/// Appends `n` events to each of `streams` in turns of ten; the last position.
async fn append<S: EventStore>(store: &S, streams: &[&str], n: usize, from: usize) -> Position {
    let mut last = Position::START;
    for turn in (0..n).step_by(10) {
        for stream in streams {
            let events = (turn..(turn + 10).min(n))
                .map(|i| {
                    NewEvent::new(
                        EventId::new(),
                        if stream.starts_with("acct") {
                            "acct.moved"
                        } else {
                            "other.noted"
                        },
                        serde_json::to_vec(&json!({ "n": from + i })).expect("json"),
                    )
                    .with_metadata(EventMetadata::default().with_correlation(CorrelationId::new()))
                })
                .collect();
            let out = store
                .append(
                    &StreamId::new(*stream).expect("id"),
                    ExpectedVersion::Any,
                    events,
                )
                .await
                .expect("append");
            last = out.last_position().expect("a position");
        }
    }
    last
}

fn start<S>(store: &S, relay: Relay<StreamPublisher>) -> Projections<S>
where
    S: ProjectionStore + EventStore + WatchAppends + Clone,
{
    ProjectionRunner::new(store.clone())
        .with_instance(Instance::named("relay-test"))
        .relay(relay)
        .expect("register")
        .start()
}

async fn relays_each_event_once<S>(store: S)
where
    S: ProjectionStore + EventStore + WatchAppends + Clone,
{
    let id = uuid::Uuid::now_v7().simple().to_string();
    let (name, prefix) = (format!("T_{id}"), format!("t.{id}"));
    let nats = JetStream::connect(&nats_url()).await.expect("connect");
    nats.ensure_stream(&name, &[&format!("{prefix}.>")], Duration::from_secs(120))
        .await
        .expect("stream");
    let streams = ["acct-1", "acct-2", "acct-3", "other-1"];
    append(&store, &streams, 200, 0).await;
    let relay = || {
        Relay::new("test.outbox", nats.publisher(&name)).route(
            Select::Category("acct".into()),
            format!("{prefix}.{{category}}.{{type}}"),
        )
    };
    let projections = start(&store, relay());
    let head = append(&store, &streams, 100, 200).await;
    projections
        .wait_for("test.outbox", head, Duration::from_secs(60))
        .await
        .expect("relayed");
    let common::Stored {
        by_stream,
        ids,
        correlated,
    } = stored(&nats, &name).await;
    assert_eq!(
        correlated,
        ids.len(),
        "every message carries its correlation id"
    );
    let expected: Vec<u64> = (0..300).collect();
    assert_eq!(by_stream.len(), 3, "only the acct category");
    for (stream, ns) in &by_stream {
        assert_eq!(ns, &expected, "{stream}: each event once, in order");
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 900);

    // A rebuild hands everything over again: the publisher skips what the stream holds,
    // so it holds each event once still.
    projections
        .rebuild("test.outbox", RebuildFrom::Start)
        .await
        .expect("rebuild");
    let head = append(&store, &["acct-1"], 10, 300).await;
    projections
        .wait_for("test.outbox", head, Duration::from_secs(60))
        .await
        .expect("relayed again");
    let common::Stored { by_stream, ids, .. } = stored(&nats, &name).await;
    assert_eq!(ids.len(), 910, "nothing stored twice");
    assert_eq!(by_stream["acct-1"], (0..310).collect::<Vec<u64>>());
    projections.shutdown().await;
    nats.context()
        .delete_stream(&name)
        .await
        .expect("drop the stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_publishes_each_event_once_in_order_from_sqlite() {
    let path =
        std::env::temp_dir().join(format!("flext-relay-{}.db", uuid::Uuid::now_v7().simple()));
    let store = SqliteEventStore::open(&path).await.expect("open");
    relays_each_event_once(store.clone()).await;
    store.close().await.expect("close");
    let _ = std::fs::remove_file(path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_publishes_each_event_once_in_order_from_postgres() {
    let store: PgEventStore = flext_testkit::harness::fresh_pg_store("relay").await;
    relays_each_event_once(store).await;
}

/// Past JetStream's duplicate window (one second here), a relay that starts over from an
/// old checkpoint stores nothing twice: the publisher skips what the stream holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_duplicate_window_doubles_nothing() {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let (name, prefix) = (format!("W_{id}"), format!("w.{id}"));
    let nats = JetStream::connect(&nats_url()).await.expect("connect");
    nats.ensure_stream(&name, &[&format!("{prefix}.>")], Duration::from_secs(1))
        .await
        .expect("stream");
    let path =
        std::env::temp_dir().join(format!("flext-relay-{}.db", uuid::Uuid::now_v7().simple()));
    let store = SqliteEventStore::open(&path).await.expect("open");
    let head = append(&store, &["acct-1", "acct-2"], 100, 0).await;
    let relay = || {
        Relay::new("test.outbox", nats.publisher(&name)).route(
            Select::Category("acct".into()),
            format!("{prefix}.{{type}}"),
        )
    };
    let first = start(&store, relay());
    first
        .wait_for("test.outbox", head, Duration::from_secs(60))
        .await
        .expect("relayed");
    first.shutdown().await;
    // Longer than the window: JetStream has forgotten the ids.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // A new process, its checkpoint moved back to the start (as after restoring an old
    // backup of the store), hands everything over again.
    let second = start(&store, relay());
    // Once it holds the relay's lease (the first gave it back when it stopped).
    let mut tries = 0;
    while let Err(e) = second.rebuild("test.outbox", RebuildFrom::Start).await {
        assert_eq!(e.reason(), "NOT_OWNER", "{e}");
        tries += 1;
        assert!(tries < 600, "the second runner never owned the relay");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let head = append(&store, &["acct-1"], 10, 100).await;
    second
        .wait_for("test.outbox", head, Duration::from_secs(60))
        .await
        .expect("relayed again");
    let common::Stored { by_stream, ids, .. } = stored(&nats, &name).await;
    assert_eq!(ids.len(), 210, "nothing stored twice");
    assert_eq!(by_stream["acct-1"], (0..110).collect::<Vec<u64>>());
    assert_eq!(by_stream["acct-2"], (0..100).collect::<Vec<u64>>());
    second.shutdown().await;
    nats.context()
        .delete_stream(&name)
        .await
        .expect("drop the stream");
    store.close().await.expect("close");
    let _ = std::fs::remove_file(path);
}

/// With `map_payload`, the relay publishes bridge envelopes: the stored payload with the
/// event's metadata, decoded here by the bridge's MessagePack and Protobuf readers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_publishes_bridge_envelopes_when_asked() {
    use flext::bridge::{Outcome, Payload, msgpack, protobuf};
    let id = uuid::Uuid::now_v7().simple().to_string();
    let nats = JetStream::connect(&nats_url()).await.expect("connect");
    let path =
        std::env::temp_dir().join(format!("flext-relay-{}.db", uuid::Uuid::now_v7().simple()));
    let store = SqliteEventStore::open(&path).await.expect("open");
    let head = append(&store, &["acct-1", "other-1"], 10, 0).await;
    type Encode = fn(&flext::RecordedEvent) -> Result<Vec<u8>, flext::Error>;
    let encoders: [(&str, Encode); 2] = [
        ("MP", msgpack::encode_event),
        ("PB", protobuf::encode_event),
    ];
    let mut runner = ProjectionRunner::new(store.clone()).with_instance(Instance::named("env"));
    for (kind, encode) in encoders {
        let (name, prefix) = (format!("E{kind}_{id}"), format!("e{kind}.{id}"));
        nats.ensure_stream(&name, &[&format!("{prefix}.>")], Duration::from_secs(120))
            .await
            .expect("stream");
        runner = runner
            .relay(
                Relay::new(format!("test.envelopes.{kind}"), nats.publisher(&name))
                    .route(
                        Select::Category("acct".into()),
                        format!("{prefix}.{{type}}"),
                    )
                    .map_payload(encode),
            )
            .expect("register");
    }
    let projections = runner.start();
    for kind in ["MP", "PB"] {
        projections
            .wait_for(
                &format!("test.envelopes.{kind}"),
                head,
                Duration::from_secs(60),
            )
            .await
            .expect("relayed");
    }
    projections.shutdown().await;
    let stored: Vec<flext::RecordedEvent> = store
        .read_stream(
            &StreamId::new("acct-1").expect("id"),
            flext::StreamVersion(0),
            100,
            flext::ports::ReadDirection::Forward,
        )
        .await
        .expect("read");
    assert_eq!(stored.len(), 10);
    for kind in ["MP", "PB"] {
        let name = format!("E{kind}_{id}");
        let stream = nats.context().get_stream(&name).await.expect("stream");
        assert_eq!(stream.get_info().await.expect("info").state.messages, 10);
        for (seq, event) in (1..=10).zip(&stored) {
            let m = stream.get_raw_message(seq).await.expect("message");
            let envelope = if kind == "MP" {
                msgpack::decode(&m.payload).expect("a MessagePack envelope")
            } else {
                protobuf::decode(&m.payload).expect("a Protobuf envelope")
            };
            let meta = |k: &str| envelope.metadata.get(k).map(String::as_str);
            assert_eq!(meta("event_type"), Some("acct.moved"));
            assert_eq!(meta("stream_id"), Some("acct-1"));
            assert_eq!(meta("event_id"), Some(event.event_id.to_string().as_str()));
            assert_eq!(
                meta("position"),
                Some(event.position.get().to_string().as_str())
            );
            assert_eq!(
                meta("correlation_id"),
                event
                    .metadata
                    .correlation_id
                    .map(|c| c.to_string())
                    .as_deref()
            );
            match &envelope.outcome {
                Outcome::Ok(Payload::Bytes { encoding, data }) => {
                    assert_eq!(encoding, "application/json");
                    assert_eq!(
                        data.as_slice(),
                        event.payload.as_ref(),
                        "the stored payload"
                    );
                }
                other => panic!("not the stored payload: {other:?}"),
            }
        }
        let _ = nats.context().delete_stream(&name).await;
    }
    store.close().await.expect("close");
    let _ = std::fs::remove_file(path);
}
