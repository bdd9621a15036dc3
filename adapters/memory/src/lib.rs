//! flext's in-memory event and snapshot stores: the same contract as the SQL adapters,
//! for tests and for embedded use where durability is not needed.
//!
//! ```
//! use flext::{EventId, ExpectedVersion, NewEvent, Position, StreamId, StreamVersion};
//! use flext::memory::InMemoryEventStore;
//! use flext::ports::EventStore;
//!
//! # fn block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     let waker = std::task::Waker::noop();
//! #     let mut cx = std::task::Context::from_waker(&waker);
//! #     let mut f = std::pin::pin!(f);
//! #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
//! # }
//! # block_on(async {
//! let store = InMemoryEventStore::new();
//! let stream = StreamId::new("account-1")?;
//! let event = NewEvent::new(EventId::new(), "account.opened", &b"{}"[..]);
//! let outcome = store.append(&stream, ExpectedVersion::NoStream, vec![event]).await?;
//! assert_eq!(outcome.stream_version, StreamVersion(1));
//! assert_eq!(store.read_all(Position::START, 10).await?.len(), 1);
//! # Ok::<(), flext::Error>(())
//! # }).unwrap();
//! ```

mod control;
mod inbox;
mod job;
mod keys;
mod lifecycle;
mod outbox;
mod ownership;
mod process;
mod schedule;
mod store;
mod tenancy;

pub use store::{InMemoryEventStore, MemoryTransaction, PendingAppend};
pub use tenancy::InMemoryTenantStores;
