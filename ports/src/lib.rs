//! flext's port traits: what the application needs from the world. The event store and
//! snapshot store (implemented by `flext-memory`, `flext-sqlite` and `flext-postgres`), the
//! event codec, and the clock and id generator that keep domain code pure and tests
//! deterministic.
//!
//! ```
//! use flext::ports::{Clock, FixedClock, IdGenerator, SequentialIds};
//! use flext::EventId;
//!
//! let clock = FixedClock::at_unix_millis(1_700_000_000_000);
//! assert_eq!(clock.now().timestamp_millis(), 1_700_000_000_000);
//!
//! let ids = SequentialIds::default();
//! let a: EventId = ids.next_id();
//! let b: EventId = ids.next_id();
//! assert!(a < b);
//! ```

mod checkpoint;
mod clock;
mod codec;
mod control;
mod dcb;
mod event_store;
mod health;
mod idempotency;
mod ids;
mod inbox;
mod inspect;
mod job;
mod json;
mod keys;
pub mod lifecycle;
mod message;
mod metrics;
mod ownership;
mod plugin;
mod process;
mod projection;
mod publish;
mod redact;
mod schedule;
mod snapshot;
pub mod sql;
mod tenancy;
pub mod trace;
mod watch;

pub use checkpoint::CheckpointStore;
pub use clock::{Clock, FixedClock, SystemClock};
pub use codec::{AppendEvents, EventCodec, new_events};
pub use control::{
    ControlAction, ControlRequest, ControlState, ControlStore, DeadLetterEdit, RebuildFrom,
    mask_fields,
};
pub use dcb::{
    APPEND_CONDITION_FAILED, AppendCondition, DcbStore, EventQuery, MAX_QUERY_ITEMS,
    MAX_QUERY_TYPES, QueryItem,
};
pub use event_store::{
    AppendOutcome, EventStore, FilteredPage, MAX_EVENT_TYPE_LEN, MAX_EVENTS_PER_APPEND,
    MAX_SCHEMA_VERSION, ReadDirection,
};
pub use health::{HealthCheck, HealthFuture};
pub use idempotency::{Claim, IdempotencyRecord, IdempotencyStore};
pub use ids::{IdGenerator, SequentialIds, UuidV7Ids};
pub use inbox::{InboundMessage, InboxDeadLetter, InboxStore, MessageSource, Settle};
pub use inspect::{
    Appended, CheckpointMove, MigrationInfo, StoreInspect, StoreStats, StreamQuery, StreamSummary,
    TypeCount,
};
pub use job::{Job, JobState, JobStats, JobStore, NewJob};
pub use json::{JsonCodec, Upcasters};
pub use keys::KeyStore;
pub use lifecycle::{
    RetentionPolicy, RetentionReport, STREAM_DELETED, STREAM_TRUNCATED, StreamInfo,
    StreamLifecycle, StreamStatus,
};
pub use message::{
    COMMAND_CAUSATION_HEADER, Command, CommandHandler, Context, EventHandler, Query, QueryHandler,
    TRACEPARENT_HEADER, is_valid_traceparent,
};
pub use metrics::{Labels, Metrics};
pub use ownership::{ConsumerRecord, Instance, Lease, Member, OwnershipStore};
pub use plugin::{
    Contributions, Health, HealthStatus, Plugin, PluginDependency, PluginFuture, VersionRequirement,
};
pub use process::{ProcessStore, StoredProcess};
pub use projection::{
    DeadLetter, Decoded, EventProjection, Projection, ProjectionStore, TableDiff, Typed,
};
pub use publish::{OutboundMessage, OutboxMessage, OutboxStore, Publisher, message_headers};
pub use redact::redact_url;
pub use schedule::{SCHEDULER_CONSUMER, ScheduleStore, Scheduled};
pub use snapshot::{Snapshot, SnapshotStore};
pub use tenancy::TenantStores;
pub use trace::{Propagator, StoreOp, StoreTelemetry};
pub use watch::{AppendSignal, AppendWatcher, Changed, WatchAppends};

/// What the store adapters share: checks of an append's input, the outcome of a rejected
/// append, the assembly of stored rows into events and dead letters, the stored form of
/// idempotency outcomes and the diagnosis of a refused checkpoint. For writers of a store
/// adapter; an application does not need them.
pub mod adapter {
    pub use crate::control::{
        assemble_control, corrupted_control, stored_outcome, unknown_dead_letter,
    };
    pub use crate::dcb::condition_failed;
    pub use crate::event_store::{
        StoredEvent, StoredRow, assemble_recorded, corrupted_event, resolve_rejected_append,
        resolve_rejected_append_in_life, stored_number, tag_violations, validate_append,
    };
    pub use crate::idempotency::{decode_error, encode_error, stored_claim};
    pub use crate::inbox::assemble_inbox_dead_letter;
    pub use crate::job::{
        JOB_COLUMNS, StoredJob, assemble_job, assemble_stats, lock_micros, new_job_row,
    };
    pub use crate::keys::check_key_name;
    pub use crate::ownership::{
        checkpoint_backwards, checkpoint_owned, chrono_ttl, ownership_lost, refused_checkpoint,
    };
    pub use crate::process::{process_row, stored_process};
    pub use crate::projection::assemble_dead_letter;
    pub use crate::publish::outbound_row;
    pub use crate::schedule::{
        StoredSchedule, assemble_scheduled, due_from_micros, due_micros, stored_schedule,
    };
}
