//! The id generator port: where new ids come from.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use flext_domain::Id;
use uuid::Uuid;

/// A source of new unique ids. Inject it wherever ids are minted, so tests can make them
/// predictable.
pub trait IdGenerator: Send + Sync {
    /// A new unique UUID.
    fn next_uuid(&self) -> Uuid;

    /// A new unique typed id.
    fn next_id<T: ?Sized>(&self) -> Id<T>
    where
        Self: Sized,
    {
        Id::from_uuid(self.next_uuid())
    }
}

impl<G: IdGenerator + ?Sized> IdGenerator for &G {
    fn next_uuid(&self) -> Uuid {
        (**self).next_uuid()
    }
}
impl<G: IdGenerator + ?Sized> IdGenerator for Arc<G> {
    fn next_uuid(&self) -> Uuid {
        (**self).next_uuid()
    }
}
impl<G: IdGenerator + ?Sized> IdGenerator for Box<G> {
    fn next_uuid(&self) -> Uuid {
        (**self).next_uuid()
    }
}

/// UUID v7 ids: time-ordered, random in their low bits.
#[derive(Debug, Clone, Copy, Default)]
pub struct UuidV7Ids;

impl IdGenerator for UuidV7Ids {
    fn next_uuid(&self) -> Uuid {
        Uuid::now_v7()
    }
}

/// Predictable ids for tests: UUIDs 1, 2, 3, ... (as 128-bit numbers).
#[derive(Debug, Default)]
pub struct SequentialIds {
    next: AtomicU64,
}

impl IdGenerator for SequentialIds {
    fn next_uuid(&self) -> Uuid {
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        Uuid::from_u128(u128::from(n))
    }
}
