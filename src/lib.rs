//! flext: a kernel for event-sourced, CQRS services in Rust, with pure domain types behind
//! port traits.
//!
//! This facade re-exports the workspace's crates behind features, so an application
//! depends on `flext` alone. [`prelude`] brings the traits into scope.
//!
//! ```
//! use flext::prelude::*;
//! use flext::{AggregateRoot, Error, ErrorCode, Id};
//!
//! #[derive(Default)]
//! struct Account { open: bool }
//! #[derive(Debug)]
//! struct Opened;
//! impl DomainEvent for Opened {
//!     fn event_type(&self) -> &'static str { "account.opened" }
//! }
//! impl Aggregate for Account {
//!     const TYPE: &'static str = "account";
//!     type Event = Opened;
//!     fn apply(&mut self, _: &Opened) { self.open = true; }
//! }
//! impl Account {
//!     fn open(&self) -> Result<Vec<Opened>, Error> {
//!         if self.open { return Err(Error::already_exists("ACCOUNT_OPEN", "already open")); }
//!         Ok(vec![Opened])
//!     }
//! }
//!
//! let mut account = AggregateRoot::<Account>::new(Id::new());
//! account.execute(Account::open)?;
//! let again = account.execute(Account::open).tap_err(|e| eprintln!("{e}"));
//! assert_eq!(again.unwrap_err().code(), ErrorCode::AlreadyExists);
//! # Ok::<(), Error>(())
//! ```
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `ports` | yes | [`ports`]: event store, snapshot store, codec, clock and id-generator ports |
//! | `application` | no | [`application`]: the repository, buses and behaviors, services, plugins, projections, ownership, health |
//! | `memory` | no | [`memory`]: the in-memory event store |
//! | `sqlite` | no | [`sqlite`]: the SQLite event store |
//! | `postgres` | no | [`postgres`]: the PostgreSQL event store |
//! | `macros` | no | `#[command_handler]`, `#[query_handler]`, `#[event_handler]`, `#[plugin]`, `#[projection]`, `#[derive(DomainEvent)]` |
//! | `bridge` | no | [`bridge`]: the cross-language result contract (MessagePack, Protobuf, problem details, type descriptors) |
//! | `nats` | no | [`nats`]: `JetStream`, the publisher a relay (`application::Relay`) sends events through |
//! | `otel` | no | [`otel`]: trace context through `tracing-opentelemetry`, the metrics port on an OpenTelemetry meter |
//! | `testing` | no | [`testing`]: the given/when/then aggregate fixture |

pub use flext_domain::{
    Aggregate, AggregateRoot, CausationId, CorrelationId, DomainEvent, Entity, Error, ErrorCode,
    EventId, EventMetadata, EventRef, ExpectedVersion, FieldViolation, Id, NewEvent, PersonalData,
    PersonalField, Position, REDACTED, RecordedEvent, Result, ResultExt, StreamId, StreamVersion,
    TenantId, Validation, ValueObject, WRONG_EXPECTED_VERSION, is_sensitive_key, join_field_path,
    traverse, wrong_expected_version,
};
pub use flext_domain::{entity_identity_eq, reexport};

/// The given/when/then aggregate fixture (feature `testing`).
#[cfg(feature = "testing")]
pub mod testing {
    pub use flext_domain::testing::{AggregateFixture, Outcome};
}

/// The port traits and their simple implementations (feature `ports`).
#[cfg(feature = "ports")]
pub mod ports {
    pub use flext_ports::*;
}

/// The application layer (feature `application`).
#[cfg(feature = "application")]
pub mod application {
    pub use flext_application::*;
}

/// The attribute macros (feature `macros`): sugar over [`application::Registry`].
#[cfg(feature = "macros")]
pub use flext_macros::{
    DomainEvent, command_handler, event_handler, plugin, process_manager, projection, query_handler,
};

/// Support paths for the macros' generated code; not a public API.
#[cfg(feature = "macros")]
#[doc(hidden)]
pub mod __private {
    pub use flext_application::__private::inventory;

    /// A handler's result as its message's: the value converted with `Into` (a
    /// repository's `Executed` into a `Position`), the error with `Into<Error>`.
    #[inline]
    pub fn handler_output<T, O: Into<T>, E: Into<crate::Error>>(
        result: Result<O, E>,
    ) -> Result<T, crate::Error> {
        result.map(Into::into).map_err(Into::into)
    }
}

/// The cross-language result bridge (feature `bridge`): see [`flext_bridge`].
#[cfg(feature = "bridge")]
pub mod bridge {
    pub use flext_bridge::*;
}

/// NATS JetStream (feature `nats`): see [`flext_nats`].
#[cfg(feature = "nats")]
pub mod nats {
    pub use flext_nats::{JetStream, JetStreamOptions, StreamPublisher};
}

/// OpenTelemetry wiring (feature `otel`): see [`flext_otel`].
#[cfg(feature = "otel")]
pub mod otel {
    pub use flext_otel::{OtelMetrics, OtelPropagator, install, parse_traceparent, traceparent};
}

/// The in-memory event store (feature `memory`).
#[cfg(feature = "memory")]
pub mod memory {
    pub use flext_memory::{
        InMemoryEventStore, InMemoryTenantStores, MemoryTransaction, PendingAppend,
    };
}

/// The SQLite event store (feature `sqlite`).
#[cfg(feature = "sqlite")]
pub mod sqlite {
    pub use flext_sqlite::{
        SqliteEventStore, SqliteStoreBuilder, SqliteTenantStores, SqliteWriteTransaction,
        Synchronous, migrator, sqlx,
    };
}

/// The PostgreSQL event store (feature `postgres`).
#[cfg(feature = "postgres")]
pub mod postgres {
    pub use flext_postgres::{
        PgEventStore, PgSharedTenantStores, PgStoreBuilder, PgTenantStores, PgWriteTransaction,
        TENANT_SETTING, migrator, sqlx,
    };
}

pub mod prelude {
    //! The traits an application uses every day, to glob-import. `use flext::prelude::*;`
    //! brings the domain traits you implement into scope by name,
    //! and the ports' and application's traits anonymously (`as _`): their methods work
    //! (`store.append_events(..)`, `tx.execute(..)`), and their names never clash with
    //! types of your own (a `Command` or `Query` enum, a `Clock`); name them through
    //! `flext::ports` / `flext::application` to implement them.
    #[cfg(feature = "application")]
    pub use flext_application::{Behavior as _, FromServices as _};
    pub use flext_domain::{Aggregate, DomainEvent, Entity, ResultExt, ValueObject};
    #[cfg(feature = "ports")]
    pub use flext_ports::{
        AppendEvents as _, CheckpointStore as _, Clock as _, Command as _, CommandHandler as _,
        EventCodec as _, EventHandler as _, EventProjection as _, EventStore as _,
        IdGenerator as _, IdempotencyStore as _, Metrics as _, OwnershipStore as _,
        Projection as _, ProjectionStore as _, Query as _, QueryHandler as _, SnapshotStore as _,
        WatchAppends as _,
        sql::{Sql as _, SqlExt as _, SqlStore as _},
    };
}

/// The README's quick start, compiled and run as a doctest.
#[cfg(all(
    doctest,
    feature = "testing",
    feature = "application",
    feature = "sqlite",
    feature = "macros",
    feature = "bridge"
))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
