//! The ownership port: which process runs each checkpointed consumer, as a lease with an
//! epoch that fences every checkpoint write.
//!
//! A consumer (a projection, a reactor, a relay: anything that reads the global order from
//! a checkpoint) runs in at most one process at a time among all that share a store. Its
//! owner holds a [`Lease`]: the owner's [`Instance`], an epoch that grows with every
//! acquisition, and an expiry that the owner renews by heartbeat. A paused or cut-off
//! owner stops renewing and loses the lease when it expires, even while its connection
//! stays open. Every checkpoint write names the lease it is made under and is refused
//! (`ABORTED`/`OWNERSHIP_LOST`) unless that lease is still current, inside the transaction
//! that carries the batch's effects: a former owner can never commit after losing
//! ownership. The consumer's row in the store is its checkpoint and its lease at once, so
//! the check and the write are one statement.
//!
//! Expiry is judged by the store's clock (PostgreSQL's `clock_timestamp()`; the process
//! clock for SQLite, whose processes share one machine, and for memory).

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use flext_domain::{Error, Position};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{AppendWatcher, CheckpointStore};

/// A process taking part in ownership: a unique id per start, and the name, host and
/// process id an operator reads in status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Unique per process start (UUID v7): two processes given the same name still differ.
    pub id: Uuid,
    /// The name an operator gave (`--instance`), else `host-pid`.
    pub name: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
}

impl Instance {
    /// `name@host:pid`, how operators' views name the instance.
    pub fn label(&self) -> String {
        format!("{}@{}:{}", self.name, self.host, self.pid)
    }

    /// This process under `name`, with a fresh id.
    pub fn named(name: impl Into<String>) -> Instance {
        Instance {
            id: Uuid::now_v7(),
            name: name.into(),
            host: host_name(),
            pid: std::process::id(),
        }
    }

    /// This process, named `host-pid`.
    pub fn current() -> Instance {
        let host = host_name();
        Instance::named(format!("{host}-{}", std::process::id()))
    }
}

/// The machine's host name (Linux's `/proc`, then `HOSTNAME`, else `unknown`).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Ownership of one consumer, held by one instance until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The consumer's name (its checkpoint's name).
    pub consumer: String,
    /// The owning instance's id.
    pub owner: Uuid,
    /// Grows by one with every acquisition; a checkpoint write under an older epoch is
    /// refused.
    pub epoch: u64,
    /// When it lapses unless renewed (store clock).
    pub expires_at: DateTime<Utc>,
}

/// What the store knows of one consumer: its checkpoint and who owns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsumerRecord {
    /// The consumer's name.
    pub consumer: String,
    /// Its checkpoint.
    pub position: Position,
    /// The epoch of its last acquisition (0: never owned).
    pub epoch: u64,
    /// The instance that holds or last held it (`None` after a release or never owned).
    pub owner: Option<Instance>,
    /// When the current (or last) owner acquired it.
    pub acquired_at: Option<DateTime<Utc>>,
    /// When its lease lapses or lapsed (for a released one: when it was released).
    pub expires_at: Option<DateTime<Utc>>,
    /// Whether an owner holds an unexpired lease right now (store clock).
    pub owned: bool,
}

impl ConsumerRecord {
    /// How long nobody has owned it at `now`: zero while owned; since the lease lapsed
    /// or was released; `None` if it was never owned.
    pub fn unowned_for(&self, now: DateTime<Utc>) -> Option<Duration> {
        if self.owned {
            return Some(Duration::ZERO);
        }
        let since = self.expires_at?;
        Some((now - since).to_std().unwrap_or(Duration::ZERO))
    }
}

/// An instance that announced itself, with the time its announcement lapses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The instance.
    pub instance: Instance,
    /// When it first announced itself.
    pub started_at: DateTime<Utc>,
    /// When its announcement lapses unless renewed.
    pub expires_at: DateTime<Utc>,
}

/// A store that leases consumers to instances and fences their checkpoints; implemented
/// by the memory, SQLite and PostgreSQL stores. `flext_application::Ownership` drives it.
pub trait OwnershipStore: CheckpointStore + Send + Sync {
    /// Takes `consumer` for `owner` for `ttl` if nobody holds an unexpired lease on it
    /// (creating its record if missing); the new lease's epoch is one more than the last.
    /// `None` when another instance holds it (or, on PostgreSQL, its row is locked by a
    /// commit in flight: try again later).
    fn acquire_lease(
        &self,
        consumer: &str,
        owner: &Instance,
        ttl: Duration,
    ) -> impl Future<Output = Result<Option<Lease>, Error>> + Send;

    /// Extends `lease` to `ttl` from now. `ABORTED`/`OWNERSHIP_LOST` when it lapsed or
    /// another acquisition came after it (an expired lease cannot be renewed, only
    /// acquired again under a new epoch).
    fn renew_lease(
        &self,
        lease: &Lease,
        ttl: Duration,
    ) -> impl Future<Output = Result<Lease, Error>> + Send;

    /// Gives `lease` up at once (if it is still current), so another instance can take
    /// the consumer without waiting for it to expire.
    fn release_lease(&self, lease: &Lease) -> impl Future<Output = Result<(), Error>> + Send;

    /// Sets the checkpoint under `lease`, outside any transaction of the caller's (for
    /// consumers whose effects are not in the store: at-least-once). Refused with
    /// `OWNERSHIP_LOST` when the lease is not current, with `CHECKPOINT_BACKWARDS` when
    /// `position` is below the stored checkpoint.
    fn save_checkpoint_fenced(
        &self,
        lease: &Lease,
        position: Position,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Every consumer the store knows, by name.
    fn consumers(&self) -> impl Future<Output = Result<Vec<ConsumerRecord>, Error>> + Send;

    /// Announces `instance` as alive for `ttl` and returns every instance whose
    /// announcement has not lapsed (this one included), oldest first.
    fn announce(
        &self,
        instance: &Instance,
        ttl: Duration,
    ) -> impl Future<Output = Result<Vec<Member>, Error>> + Send;

    /// Withdraws `instance`'s announcement (a clean shutdown).
    fn leave(&self, instance: &Instance) -> impl Future<Output = Result<(), Error>> + Send;

    /// The store's clock now (the clock leases are judged by).
    fn clock_now(&self) -> impl Future<Output = Result<DateTime<Utc>, Error>> + Send;

    /// A watcher pulsed when a consumer's record may have changed: a checkpoint moved, a
    /// lease released (on PostgreSQL also for other processes, through notifications).
    fn watch_consumers(&self) -> AppendWatcher;
}

/// The error for a checkpoint write or a renewal under a lease that is no longer current:
/// `ABORTED`/`OWNERSHIP_LOST` with the consumer, the epoch held and the current one.
pub fn ownership_lost(lease: &Lease, current_epoch: Option<u64>, why: &str) -> Error {
    let mut e = Error::conflict(
        "OWNERSHIP_LOST",
        format!(
            "consumer {:?} is no longer owned under epoch {}: {why}",
            lease.consumer, lease.epoch
        ),
    )
    .with_detail("consumer", lease.consumer.as_str())
    .with_detail("epoch_held", lease.epoch)
    .with_detail("owner", lease.owner.to_string());
    if let Some(current) = current_epoch {
        e = e.with_detail("epoch_current", current);
    }
    e
}

/// The error for a checkpoint write below the stored checkpoint outside a rebuild:
/// `FAILED_PRECONDITION`/`CHECKPOINT_BACKWARDS`.
pub fn checkpoint_backwards(consumer: &str, stored: Position, asked: Position) -> Error {
    Error::failed_precondition(
        "CHECKPOINT_BACKWARDS",
        format!(
            "the checkpoint of {consumer:?} is at {stored}; {asked} would move it back (only a rebuild may)"
        ),
    )
    .with_detail("consumer", consumer)
    .with_detail("stored", stored.get())
    .with_detail("asked", asked.get())
}

/// The error for an unfenced checkpoint write ([`crate::CheckpointStore::save_checkpoint`])
/// over a consumer that an instance owns: `FAILED_PRECONDITION`/`CHECKPOINT_OWNED`.
pub fn checkpoint_owned(consumer: &str) -> Error {
    Error::failed_precondition(
        "CHECKPOINT_OWNED",
        format!(
            "consumer {consumer:?} is owned by an instance: its checkpoint is written under its lease"
        ),
    )
    .with_detail("consumer", consumer)
}

/// Why a fenced checkpoint write that changed no row was refused, from the consumer's row
/// as it is now (`None` if it has none): the shared diagnosis of the SQL stores.
pub fn refused_checkpoint(
    lease: &Lease,
    row: Option<(u64, Option<Uuid>, bool, Position)>,
    asked: Position,
) -> Error {
    match row {
        None => ownership_lost(lease, None, "the consumer has no record"),
        Some((epoch, owner, unexpired, stored)) => {
            if epoch != lease.epoch || owner != Some(lease.owner) {
                ownership_lost(lease, Some(epoch), "another acquisition came after it")
            } else if !unexpired {
                ownership_lost(lease, Some(epoch), "the lease expired")
            } else {
                checkpoint_backwards(&lease.consumer, stored, asked)
            }
        }
    }
}

/// Converts a `ttl` to chrono's duration (saturating at a century).
pub fn chrono_ttl(ttl: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(ttl).unwrap_or_else(|_| chrono::TimeDelta::days(36_500))
}
