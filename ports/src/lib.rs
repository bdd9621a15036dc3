//! flext's port traits: the clock and id generator the application is given, so that
//! domain code stays pure and tests stay deterministic. The event store, snapshot store,
//! checkpoint store, codec and handler ports join them as they are built.
//!
//! ```
//! use flext_ports::{Clock, FixedClock, IdGenerator, SequentialIds};
//! use flext_domain::EventId;
//!
//! let clock = FixedClock::at_unix_millis(1_700_000_000_000);
//! assert_eq!(clock.now().timestamp_millis(), 1_700_000_000_000);
//!
//! let ids = SequentialIds::default();
//! let a: EventId = ids.next_id();
//! let b: EventId = ids.next_id();
//! assert!(a < b);
//! ```

mod clock;
mod ids;

pub use clock::{Clock, FixedClock, SystemClock};
pub use ids::{IdGenerator, SequentialIds, UuidV7Ids};
