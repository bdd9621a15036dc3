//! flext's pure domain kernel: errors with stable codes, result combinators, typed ids,
//! aggregates, domain events and the envelopes that carry them.
//!
//! Everything here is synchronous and free of I/O; time and ids that must be deterministic
//! are injected by the caller (see `flext-ports`).
//!
//! ```
//! use flext::{Aggregate, AggregateRoot, DomainEvent, Error, ErrorCode, Id, Validation};
//!
//! #[derive(Default)]
//! struct Account { balance: i64 }
//!
//! #[derive(Debug, PartialEq)]
//! enum AccountEvent { Deposited(i64), Withdrawn(i64) }
//!
//! impl DomainEvent for AccountEvent {
//!     fn event_type(&self) -> &'static str {
//!         match self {
//!             AccountEvent::Deposited(_) => "account.deposited",
//!             AccountEvent::Withdrawn(_) => "account.withdrawn",
//!         }
//!     }
//! }
//!
//! impl Aggregate for Account {
//!     const TYPE: &'static str = "account";
//!     type Event = AccountEvent;
//!     fn apply(&mut self, event: &AccountEvent) {
//!         match event {
//!             AccountEvent::Deposited(n) => self.balance += n,
//!             AccountEvent::Withdrawn(n) => self.balance -= n,
//!         }
//!     }
//! }
//!
//! impl Account {
//!     fn withdraw(&self, amount: i64) -> Result<Vec<AccountEvent>, Error> {
//!         let mut v = Validation::new();
//!         v.ensure(amount > 0, "amount", "NOT_POSITIVE", "must be greater than 0");
//!         v.finish()?;
//!         if amount > self.balance {
//!             return Err(Error::failed_precondition("INSUFFICIENT_FUNDS", "balance too low")
//!                 .with_detail("balance", self.balance));
//!         }
//!         Ok(vec![AccountEvent::Withdrawn(amount)])
//!     }
//! }
//!
//! let mut account = AggregateRoot::<Account>::from_history(Id::new(), &[AccountEvent::Deposited(100)]);
//! account.execute(|a| a.withdraw(30))?;
//! assert_eq!(account.state().balance, 70);
//!
//! let refused = account.execute(|a| a.withdraw(500)).unwrap_err();
//! assert_eq!(refused.code(), ErrorCode::FailedPrecondition);
//! assert_eq!(account.uncommitted(), &[AccountEvent::Withdrawn(30)]);
//! # Ok::<(), Error>(())
//! ```
//!
//! | feature | what it adds |
//! |---|---|
//! | `testing` | [`testing::AggregateFixture`], given/when/then for aggregates |

mod aggregate;
mod entity;
mod error;
mod event;
mod id;
mod personal;
mod result;
mod stream;
mod tenant;
#[cfg(feature = "testing")]
pub mod testing;
mod validation;

pub use aggregate::{Aggregate, AggregateRoot};
pub use entity::{Entity, ValueObject};
pub use error::{Error, ErrorCode, FieldViolation, REDACTED, Result, is_sensitive_key};
pub use event::{
    DomainEvent, EventMetadata, EventRef, MAX_TAG_LEN, MAX_TAGS_PER_EVENT, NewEvent, RecordedEvent,
};
pub use id::{
    CausationId, CausationMarker, CorrelationId, CorrelationMarker, EventId, EventMarker, Id,
};
pub use personal::{PersonalData, PersonalField};
pub use result::{ResultExt, traverse};
pub use stream::{
    ExpectedVersion, Position, StreamId, StreamVersion, WRONG_EXPECTED_VERSION,
    wrong_expected_version,
};
pub use tenant::TenantId;
pub use validation::{Validation, join_field_path};

/// Re-exports of the crates whose types appear in this crate's public API.
pub mod reexport {
    pub use bytes;
    pub use chrono;
    pub use serde_json;
    pub use uuid;
}
