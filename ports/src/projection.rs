//! The projection port: read models built from the global order, and the store
//! transactions that let a read model and its checkpoint commit together.

use std::future::Future;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use flext_domain::{
    DomainEvent, Error, EventId, EventMetadata, Position, RecordedEvent, StreamId, StreamVersion,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{ControlStore, EventCodec, JsonCodec, Lease, OwnershipStore};

/// Builds a read model from events, in the global order. Run by
/// `flext_application::ProjectionRunner`.
///
/// `T` is the transaction of the store the runner works with
/// ([`ProjectionStore::Transaction`]): a `PgWriteTransaction`, a `SqliteWriteTransaction`,
/// or the in-memory store's. A projection that writes its read model through that
/// transaction (its `connection()`) is updated **exactly once**: the runner commits the
/// batch's changes and the checkpoint together. A projection that writes anywhere else is
/// updated **at least once**: after a crash it may see events again, and deduplicates by
/// [`RecordedEvent::event_id`].
///
/// On SQLite the transaction holds the store's one writer for the length of a batch: a
/// projection appends through `tx.append(..)`, never through the store itself (which would
/// wait for the writer the batch holds).
///
/// Generic over `T` when it does not care where it runs:
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use flext::{Error, RecordedEvent};
/// use flext::ports::Projection;
///
/// #[derive(Default)]
/// struct CountEvents(AtomicU64);
///
/// impl<T: Send> Projection<T> for CountEvents {
///     fn name(&self) -> &str {
///         "count-events"
///     }
///     async fn handle(&self, _tx: &mut T, _event: &RecordedEvent) -> Result<(), Error> {
///         self.0.fetch_add(1, Ordering::Relaxed); // at least once: a restart may recount
///         Ok(())
///     }
///     async fn reset(&self, _tx: &mut T) -> Result<(), Error> {
///         self.0.store(0, Ordering::Relaxed);
///         Ok(())
///     }
/// }
/// ```
pub trait Projection<T>: Send + Sync + 'static {
    /// The projection's name: the key of its checkpoint, its dead letters and its status.
    fn name(&self) -> &str;

    /// Applies one event. An error rolls back the batch; the runner retries and then
    /// parks the event or stops, per the projection's options.
    fn handle(
        &self,
        tx: &mut T,
        event: &RecordedEvent,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Empties the read model before a rebuild from the beginning (in the transaction
    /// that also resets the checkpoint). The default refuses: a projection that cannot
    /// forget what it built cannot be rebuilt.
    fn reset(&self, tx: &mut T) -> impl Future<Output = Result<(), Error>> + Send {
        let _ = tx;
        rebuild_unsupported(self.name())
    }

    /// Prepares the read model (creates or migrates its tables, e.g. with
    /// [`crate::sql::migrate`]) in a transaction of its own, each time this process comes
    /// to own the projection and after a rebuild, before the next event. Nothing by
    /// default. A transient error is retried; another stops the projection (`Failed`) until
    /// it is resumed.
    fn setup(&self, tx: &mut T) -> impl Future<Output = Result<(), Error>> + Send {
        let _ = tx;
        std::future::ready(Ok(()))
    }

    /// The read model's migration steps, applied in order before [`Projection::setup`]
    /// by [`ProjectionStore::migrate`] (each step once; see [`crate::sql::migrate`]). None
    /// by default; only the SQL stores take any.
    fn migrations(&self) -> &[&str] {
        &[]
    }

    /// The event types this projection handles: the runner hands it only those (its
    /// checkpoint still moves past the others). `None`, the default, hands it every event.
    /// An [`EventProjection`] answers with its event type's names.
    fn event_types(&self) -> Option<&[&str]> {
        None
    }
}

fn rebuild_unsupported(name: &str) -> impl Future<Output = Result<(), Error>> + Send + use<> {
    let name = name.to_owned();
    async move {
        Err(Error::unimplemented(
            "REBUILD_UNSUPPORTED",
            format!("projection {name:?} cannot be rebuilt from the beginning: it does not implement `reset`"),
        )
        .with_detail("projection", name))
    }
}

/// A stored event decoded to its type `E`, with the record it was decoded from (position,
/// stream, version, id, time and metadata).
#[derive(Debug, Clone, Copy)]
pub struct Decoded<'a, E> {
    /// The event, decoded and upcast to its current schema version.
    pub event: E,
    /// The stored record.
    pub record: &'a RecordedEvent,
}

impl<'a, E> Decoded<'a, E> {
    /// The event's global position.
    pub fn position(&self) -> Position {
        self.record.position
    }

    /// The event's stream.
    pub fn stream_id(&self) -> &'a StreamId {
        &self.record.stream_id
    }

    /// The stream id after its `{category}-` prefix (`"account-7f3…"` gives `"7f3…"`): the
    /// aggregate's id in a stream the repository named. The whole id when it has no `-`.
    pub fn stream_key(&self) -> &'a str {
        let s = self.record.stream_id.as_str();
        s.split_once('-').map_or(s, |(_, key)| key)
    }

    /// The event's metadata (correlation, causation, headers).
    pub fn metadata(&self) -> &'a EventMetadata {
        &self.record.metadata
    }
}

/// A projection of one event type: the runner hands it only the stored events whose type
/// is one of [`DomainEvent::event_types`] of [`EventProjection::Event`] (the others are
/// skipped, never decoded), decoded and upcast by [`EventProjection::codec`]. The runner's
/// `register` takes it as it takes a [`Projection`] (wrapped in [`Typed`]).
///
/// ```
/// use flext::{DomainEvent, Error};
/// use flext::ports::{Decoded, EventProjection};
/// use serde::{Deserialize, Serialize};
/// use std::sync::atomic::{AtomicI64, Ordering};
///
/// #[derive(Serialize, Deserialize)]
/// enum AccountEvent { Deposited { amount: i64 }, Withdrawn { amount: i64 } }
/// impl DomainEvent for AccountEvent {
///     fn event_type(&self) -> &'static str {
///         match self { Self::Deposited { .. } => "deposited", Self::Withdrawn { .. } => "withdrawn" }
///     }
///     fn event_types() -> &'static [&'static str] { &["deposited", "withdrawn"] } // derived
/// }
///
/// #[derive(Default)]
/// struct Total(AtomicI64);
///
/// impl<T: Send> EventProjection<T> for Total {
///     type Event = AccountEvent;
///     const NAME: &'static str = "total";
///     async fn apply(&self, _tx: &mut T, e: Decoded<'_, AccountEvent>) -> Result<(), Error> {
///         let change = match e.event {
///             AccountEvent::Deposited { amount } => amount,
///             AccountEvent::Withdrawn { amount } => -amount,
///         };
///         self.0.fetch_add(change, Ordering::Relaxed);
///         Ok(())
///     }
/// }
/// ```
pub trait EventProjection<T>: Send + Sync + 'static {
    /// The event type it projects (an enum of an aggregate's events, usually).
    type Event: DomainEvent + Serialize + DeserializeOwned + Send + Sync + 'static;

    /// The projection's name: the key of its checkpoint, its dead letters and its status.
    const NAME: &'static str;

    /// The read model's migration steps (SQL, `;`-separated statements per step), applied
    /// in order, each once, before the first event and before a rebuild, in the runner's
    /// transaction; add a step to change the tables, never edit one. None by default.
    const MIGRATIONS: &'static [&'static str] = &[];

    /// The name, [`EventProjection::NAME`] by default; override it for names made at run
    /// time (one projection per tenant).
    fn name(&self) -> &str {
        Self::NAME
    }

    /// Applies one event of its type. An error rolls back the batch, as for
    /// [`Projection::handle`].
    fn apply(
        &self,
        tx: &mut T,
        event: Decoded<'_, Self::Event>,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Empties the read model before a rebuild, as [`Projection::reset`]; the default
    /// refuses.
    fn reset(&self, tx: &mut T) -> impl Future<Output = Result<(), Error>> + Send {
        let _ = tx;
        rebuild_unsupported(self.name())
    }

    /// Prepares the read model, as [`Projection::setup`]; nothing by default.
    fn setup(&self, tx: &mut T) -> impl Future<Output = Result<(), Error>> + Send {
        let _ = tx;
        std::future::ready(Ok(()))
    }

    /// The codec that decodes and upcasts its events: JSON without upcasters by default;
    /// return a [`JsonCodec::with_upcasters`] kept in the projection when the event type
    /// has older schema versions in the store.
    fn codec(&self) -> &dyn EventCodec<Self::Event> {
        static PLAIN: LazyLock<JsonCodec> = LazyLock::new(JsonCodec::new);
        &*PLAIN
    }
}

/// An [`EventProjection`] as a [`Projection`]: selects its event types, decodes each event
/// with its codec and hands it over. `ProjectionRunner::register` wraps an
/// `EventProjection` in it by itself.
#[derive(Debug, Clone, Default)]
pub struct Typed<P>(pub P);

impl<T: Send, P: EventProjection<T>> Projection<T> for Typed<P> {
    fn name(&self) -> &str {
        self.0.name()
    }

    async fn handle(&self, tx: &mut T, event: &RecordedEvent) -> Result<(), Error> {
        let decoded = self.0.codec().decode(event.as_event_ref())?;
        self.0
            .apply(
                tx,
                Decoded {
                    event: decoded,
                    record: event,
                },
            )
            .await
    }

    fn reset(&self, tx: &mut T) -> impl Future<Output = Result<(), Error>> + Send {
        self.0.reset(tx)
    }

    fn setup(&self, tx: &mut T) -> impl Future<Output = Result<(), Error>> + Send {
        self.0.setup(tx)
    }

    fn migrations(&self) -> &[&str] {
        P::MIGRATIONS
    }

    fn event_types(&self) -> Option<&[&str]> {
        Some(P::Event::event_types())
    }
}

/// An event a projection could not handle, set aside so the projection could go on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The projection that failed.
    pub projection: String,
    /// The event's global position.
    pub position: Position,
    /// The event's id.
    pub event_id: EventId,
    /// The event's stream.
    pub stream_id: StreamId,
    /// The event's version in its stream.
    pub stream_version: StreamVersion,
    /// The event's type.
    pub event_type: String,
    /// The last error.
    pub error: Error,
    /// How many times the projection tried.
    pub attempts: u32,
    /// When it was parked.
    pub parked_at: DateTime<Utc>,
}

impl DeadLetter {
    /// The dead letter of `event` for `projection`.
    pub fn of(
        projection: &str,
        event: &RecordedEvent,
        error: Error,
        attempts: u32,
        parked_at: DateTime<Utc>,
    ) -> DeadLetter {
        DeadLetter {
            projection: projection.to_owned(),
            position: event.position,
            event_id: event.event_id,
            stream_id: event.stream_id.clone(),
            stream_version: event.stream_version,
            event_type: event.event_type.clone(),
            error,
            attempts,
            parked_at,
        }
    }
}

/// A store in which a projection runner keeps checkpoints, dead letters and the
/// operators' control requests ([`ControlStore`]), in
/// transactions that a projection can write its read model in.
///
/// Dropping a transaction without [`ProjectionStore::commit`] rolls it back: nothing it
/// wrote, parked or unparked stays.
///
/// Checkpoints are fenced: [`ProjectionStore::set_checkpoint`] names the [`Lease`] the
/// batch runs under and fails with `ABORTED`/`OWNERSHIP_LOST` (and changes nothing) when
/// that lease is no longer current, so a former owner's late commit never lands.
pub trait ProjectionStore: OwnershipStore + ControlStore + Send + Sync + 'static {
    /// The transaction handed to projections.
    type Transaction: Send + 'static;

    /// Whether a read model written through [`ProjectionStore::Transaction`] commits
    /// with the checkpoint (true for the SQL stores; the in-memory store has no read
    /// model of its own to write, so its projections are at-least-once).
    fn exactly_once(&self) -> bool;

    /// Begins a transaction.
    fn begin(&self) -> impl Future<Output = Result<Self::Transaction, Error>> + Send;

    /// Moves the checkpoint of `lease.consumer` forward to `position` in `tx`, under
    /// `lease`: `ABORTED`/`OWNERSHIP_LOST` when the lease is not current (expired, or
    /// another acquisition came after it), `FAILED_PRECONDITION`/`CHECKPOINT_BACKWARDS`
    /// when `position` is below the stored checkpoint. Either error changes nothing; roll
    /// the transaction back. Setting the same position again is a fence alone.
    fn set_checkpoint(
        &self,
        tx: &mut Self::Transaction,
        lease: &Lease,
        position: Position,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Sets the checkpoint of `lease.consumer` to `position` in `tx` in either direction,
    /// under `lease` (a rebuild); `OWNERSHIP_LOST` as for
    /// [`ProjectionStore::set_checkpoint`].
    fn rewind_checkpoint(
        &self,
        tx: &mut Self::Transaction,
        lease: &Lease,
        position: Position,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Commits `tx`.
    fn commit(&self, tx: Self::Transaction) -> impl Future<Output = Result<(), Error>> + Send;

    /// Parks `letter` in `tx` (replacing a dead letter of the same projection and event).
    fn park(
        &self,
        tx: &mut Self::Transaction,
        letter: &DeadLetter,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Removes the dead letter of `projection` for `event_id` in `tx`; whether there was
    /// one.
    fn unpark(
        &self,
        tx: &mut Self::Transaction,
        projection: &str,
        event_id: EventId,
    ) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Applies the read-model migration `steps` of `name` that have not run yet, in `tx`
    /// (what [`crate::sql::migrate`] does on the SQL stores). The default takes no step:
    /// a store with no read model of its own refuses any with
    /// `UNIMPLEMENTED`/`MIGRATIONS_UNSUPPORTED`.
    fn migrate(
        &self,
        tx: &mut Self::Transaction,
        name: &str,
        steps: &[&str],
    ) -> impl Future<Output = Result<(), Error>> + Send {
        let _ = tx;
        let refused = (!steps.is_empty()).then(|| {
            Error::unimplemented(
                "MIGRATIONS_UNSUPPORTED",
                format!("read model {name:?} has migrations, and this store keeps no read model of its own"),
            )
        });
        std::future::ready(refused.map_or(Ok(()), Err))
    }

    /// The dead letters of `projection`, in position order.
    fn dead_letters(
        &self,
        projection: &str,
    ) -> impl Future<Output = Result<Vec<DeadLetter>, Error>> + Send;

    /// A fresh, empty store beside this one (SQLite: a file next to the database;
    /// PostgreSQL: a schema of its own in the same database) into which a projection is
    /// rebuilt to be compared with its live read model (`flext projections rebuild
    /// --verify`). The default: `UNIMPLEMENTED`/`SHADOW_UNSUPPORTED`.
    fn shadow(&self, name: &str) -> impl Future<Output = Result<Self, Error>> + Send
    where
        Self: Sized,
    {
        let _ = name;
        std::future::ready(Err(shadow_unsupported()))
    }

    /// The rows that differ between this store's tables and the same tables in `shadow`
    /// (the tables the shadow holds, flext's own left out), table by table.
    fn compare_shadow(
        &self,
        shadow: &Self,
    ) -> impl Future<Output = Result<Vec<TableDiff>, Error>> + Send
    where
        Self: Sized,
    {
        let _ = shadow;
        std::future::ready(Err(shadow_unsupported()))
    }

    /// Removes `shadow` (its schema or file).
    fn drop_shadow(&self, shadow: Self) -> impl Future<Output = Result<(), Error>> + Send
    where
        Self: Sized,
    {
        drop(shadow);
        std::future::ready(Ok(()))
    }
}

fn shadow_unsupported() -> Error {
    Error::unimplemented(
        "SHADOW_UNSUPPORTED",
        "this store cannot build a shadow read model to verify a rebuild against",
    )
}

/// How one read-model table differs between the live store and a shadow rebuilt from the
/// same events up to the same checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableDiff {
    /// The table.
    pub table: String,
    /// Rows the live table has and the rebuilt one has not (as JSON objects).
    pub live_only: Vec<serde_json::Value>,
    /// Rows the rebuilt table has and the live one has not.
    pub rebuilt_only: Vec<serde_json::Value>,
}

/// Builds a [`DeadLetter`] from the columns a SQL adapter stored (`error` is the JSON of
/// [`crate::adapter::encode_error`]); a column that does not convert is a `DataLoss` error with
/// reason `CORRUPTED_DEAD_LETTER` naming the projection and position.
#[allow(clippy::too_many_arguments)]
pub fn assemble_dead_letter(
    projection: String,
    position: i64,
    event_id: uuid::Uuid,
    stream: &str,
    version: i64,
    event_type: String,
    error: &str,
    attempts: i64,
    parked_at: DateTime<Utc>,
) -> Result<DeadLetter, Error> {
    let bad = |what: String| {
        Error::data_loss(
            "CORRUPTED_DEAD_LETTER",
            format!("the dead letter of projection {projection:?} at position {position} cannot be read: {what}"),
        )
        .with_detail("projection", projection.as_str())
        .with_detail("position", position)
    };
    let stream_id = StreamId::new(stream).map_err(|e| bad(e.message().to_owned()))?;
    let error = serde_json::from_str::<Error>(error).map_err(|e| bad(e.to_string()))?;
    Ok(DeadLetter {
        position: Position(u64::try_from(position).map_err(|e| bad(e.to_string()))?),
        event_id: EventId::from_uuid(event_id),
        stream_id,
        stream_version: StreamVersion(u64::try_from(version).map_err(|e| bad(e.to_string()))?),
        event_type,
        error,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        parked_at,
        projection,
    })
}
