//! The snapshot-store port: the latest saved state of an aggregate, to skip replaying.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use flext_domain::{Error, StreamId, StreamVersion};

/// An aggregate's encoded state as of one version of its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The aggregate's stream.
    pub stream_id: StreamId,
    /// The stream version the state includes.
    pub version: StreamVersion,
    /// The version of the state's encoding; a snapshot of another version is ignored.
    pub schema_version: u32,
    /// The encoded state.
    pub state: Bytes,
}

/// Keeps the latest snapshot per stream. Snapshots are a cache: losing one costs a replay,
/// never correctness.
pub trait SnapshotStore: Send + Sync {
    /// Stores `snapshot`, replacing an older one of the same stream; a snapshot older than
    /// the stored one is dropped.
    fn save_snapshot(&self, snapshot: Snapshot) -> impl Future<Output = Result<(), Error>> + Send;

    /// The latest snapshot of `stream`, if any.
    fn load_snapshot(
        &self,
        stream: &StreamId,
    ) -> impl Future<Output = Result<Option<Snapshot>, Error>> + Send;
}

impl<S: SnapshotStore + ?Sized> SnapshotStore for Arc<S> {
    fn save_snapshot(&self, snapshot: Snapshot) -> impl Future<Output = Result<(), Error>> + Send {
        (**self).save_snapshot(snapshot)
    }
    fn load_snapshot(
        &self,
        stream: &StreamId,
    ) -> impl Future<Output = Result<Option<Snapshot>, Error>> + Send {
        (**self).load_snapshot(stream)
    }
}
