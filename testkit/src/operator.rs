//! What the operator tools' tests run against: a projection that parks a poison event
//! until healed, and a store seeded with two business actions (a command's event and the
//! follow-up command it caused), a third stream and a poison event.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use flext_domain::{
    CausationId, CorrelationId, Error, EventId, EventMetadata, ExpectedVersion, NewEvent,
    RecordedEvent, StreamId,
};
use flext_ports::sql::Sql;
use flext_ports::{COMMAND_CAUSATION_HEADER, EventStore, Projection, sql_args};
use serde_json::{Value, json};

/// Counts events per stream; fails on `test.poison` until healed.
#[derive(Clone)]
pub struct Totals {
    /// While false, a `test.poison` event whose payload has `"bad": true` fails.
    pub healed: Arc<AtomicBool>,
}

/// The projection's name.
pub const TOTALS: &str = "test.totals";

impl<T: Sql + Send + 'static> Projection<T> for Totals {
    fn name(&self) -> &str {
        TOTALS
    }

    async fn handle(&self, tx: &mut T, event: &RecordedEvent) -> Result<(), Error> {
        let bad =
            serde_json::from_slice::<Value>(&event.payload).is_ok_and(|p| p["bad"] == json!(true));
        if event.event_type == "test.poison" && bad && !self.healed.load(Ordering::SeqCst) {
            return Err(Error::invalid_argument(
                "POISON",
                "this event cannot be handled",
            ));
        }
        tx.execute(
            "INSERT INTO totals (stream, n) VALUES ($1, 1) \
             ON CONFLICT (stream) DO UPDATE SET n = totals.n + 1",
            sql_args![event.stream_id.as_str()],
        )
        .await
        .map(drop)
    }

    async fn reset(&self, tx: &mut T) -> Result<(), Error> {
        tx.execute("DELETE FROM totals", sql_args![])
            .await
            .map(drop)
    }

    fn migrations(&self) -> &[&str] {
        &["CREATE TABLE totals (stream TEXT PRIMARY KEY, n BIGINT NOT NULL)"]
    }
}

/// A new event of type `kind` with a JSON payload.
pub fn event(kind: &str, payload: Value, metadata: EventMetadata) -> NewEvent {
    NewEvent::new(
        EventId::new(),
        kind,
        serde_json::to_vec(&payload).expect("json"),
    )
    .with_metadata(metadata)
}

/// The seeded events' ids. Two business actions: `acct-1` opened by a command, then a follow-up command (caused
/// by that event) recording on `acct-2`; a third stream; a poison event.
pub struct Data {
    /// The first action's event (on `acct-1`, recorded by a command).
    pub opened: EventId,
    /// The follow-up command's event (on `acct-2`), caused by `opened`.
    pub follow_up: EventId,
    /// The poison event (on `acct-3`).
    pub poison: EventId,
}

/// Appends the data the operator tests look at.
pub async fn seed<S: EventStore>(store: &S) -> Data {
    let correlation = CorrelationId::new();
    let first_command = CausationId::from_uuid(correlation.as_uuid());
    let opened = event(
        "test.opened",
        json!({ "owner": "ada", "limit": 100 }),
        EventMetadata::caused_by(correlation, first_command),
    );
    let opened_id = opened.event_id;
    let follow = event(
        "test.credited",
        json!({ "amount": 5 }),
        EventMetadata::caused_by(correlation, CausationId::new())
            .with_header(COMMAND_CAUSATION_HEADER, opened_id.to_string()),
    );
    let follow_id = follow.event_id;
    let poison = event(
        "test.poison",
        json!({ "bad": true }),
        EventMetadata::default(),
    );
    let poison_id = poison.event_id;
    for (stream, events) in [
        ("acct-1", vec![opened]),
        ("acct-2", vec![follow]),
        (
            "other-1",
            vec![
                event("test.noted", json!({ "n": 1 }), EventMetadata::default()),
                event("test.noted", json!({ "n": 2 }), EventMetadata::default()),
            ],
        ),
        ("acct-3", vec![poison]),
    ] {
        store
            .append(
                &StreamId::new(stream).expect("stream id"),
                ExpectedVersion::Any,
                events,
            )
            .await
            .expect("append");
    }
    Data {
        opened: opened_id,
        follow_up: follow_id,
        poison: poison_id,
    }
}
