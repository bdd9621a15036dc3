//! The checkpoint port: how far each named reader of the global order has got.

use std::future::Future;
use std::sync::Arc;

use flext_domain::{Error, Position};

/// Remembers, per reader name (a projection, a subscription), the last global position it
/// has fully processed. A reader that restarts reads all after its checkpoint.
pub trait CheckpointStore: Send + Sync {
    /// The checkpoint of `name`, if it has one.
    fn load_checkpoint(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<Position>, Error>> + Send;

    /// Sets the checkpoint of `name` to `position` (also backwards: a rebuild starts over),
    /// for readers that run without ownership. Refused with
    /// `FAILED_PRECONDITION`/`CHECKPOINT_OWNED` while an instance holds a lease on `name`:
    /// an owned consumer's checkpoint moves only under its lease
    /// (`ProjectionStore::set_checkpoint`, `OwnershipStore::save_checkpoint_fenced`).
    fn save_checkpoint(
        &self,
        name: &str,
        position: Position,
    ) -> impl Future<Output = Result<(), Error>> + Send;
}

impl<S: CheckpointStore> CheckpointStore for Arc<S> {
    fn load_checkpoint(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<Position>, Error>> + Send {
        (**self).load_checkpoint(name)
    }
    fn save_checkpoint(
        &self,
        name: &str,
        position: Position,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        (**self).save_checkpoint(name, position)
    }
}
