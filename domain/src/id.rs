//! Typed identifiers: `Id<T>`, a UUID that knows what it identifies.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::ErrorCode;
use crate::error::{Error, FieldViolation};

/// A UUID that identifies a `T`: an `Id<Account>` cannot be passed where an `Id<Order>` is
/// expected. Serialized exactly as the UUID (serde-transparent, hyphenated text).
///
/// [`Id::new`] makes a UUID v7 (time-ordered, so ids sort by creation time and index well).
/// Code that must be deterministic takes ids from an injected generator and wraps them
/// with [`Id::from_uuid`].
///
/// ```
/// use flext::Id;
/// struct Account;
///
/// let id: Id<Account> = Id::new();
/// let parsed: Id<Account> = id.to_string().parse()?;
/// assert_eq!(id, parsed);
/// assert!("not-a-uuid".parse::<Id<Account>>().is_err());
/// # Ok::<(), flext::Error>(())
/// ```
pub struct Id<T: ?Sized> {
    uuid: Uuid,
    marker: PhantomData<fn() -> T>,
}

impl<T: ?Sized> Id<T> {
    /// A new UUID v7 id, from the system clock and a random source.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Id::from_uuid(Uuid::now_v7())
    }

    /// Wraps an existing UUID.
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Id {
            uuid,
            marker: PhantomData,
        }
    }

    /// The UUID inside.
    pub const fn as_uuid(&self) -> Uuid {
        self.uuid
    }

    /// The same UUID as an id of another type (a command id becoming a causation id).
    pub const fn cast<U: ?Sized>(self) -> Id<U> {
        Id::from_uuid(self.uuid)
    }

    /// Parses a hyphenated, simple, braced or URN UUID. A malformed id is an
    /// `InvalidArgument` error with reason `MALFORMED_ID` that quotes (a bounded prefix of)
    /// the input.
    pub fn parse(text: &str) -> Result<Self, Error> {
        Uuid::try_parse(text).map(Id::from_uuid).map_err(|e| {
            let shown: String = text.chars().take(64).collect();
            Error::invalid_argument("MALFORMED_ID", format!("`{shown}` is not a UUID: {e}"))
                .with_field_violation(FieldViolation::new(
                    "id",
                    ErrorCode::InvalidArgument,
                    "MALFORMED_ID",
                    "must be a UUID",
                ))
        })
    }
}

impl<T: ?Sized> Clone for Id<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: ?Sized> Copy for Id<T> {}
impl<T: ?Sized> PartialEq for Id<T> {
    fn eq(&self, other: &Self) -> bool {
        self.uuid == other.uuid
    }
}
impl<T: ?Sized> Eq for Id<T> {}
impl<T: ?Sized> PartialOrd for Id<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T: ?Sized> Ord for Id<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.uuid.cmp(&other.uuid)
    }
}
impl<T: ?Sized> Hash for Id<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.uuid.hash(state);
    }
}
impl<T: ?Sized> fmt::Debug for Id<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.uuid)
    }
}
impl<T: ?Sized> fmt::Display for Id<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.uuid, f)
    }
}
impl<T: ?Sized> FromStr for Id<T> {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Id::parse(s)
    }
}
impl<T: ?Sized> From<Uuid> for Id<T> {
    fn from(uuid: Uuid) -> Self {
        Id::from_uuid(uuid)
    }
}
impl<T: ?Sized> From<Id<T>> for Uuid {
    fn from(id: Id<T>) -> Self {
        id.uuid
    }
}
impl<T: ?Sized> Serialize for Id<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.uuid.serialize(serializer)
    }
}
impl<'de, T: ?Sized> Deserialize<'de> for Id<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Uuid::deserialize(deserializer).map(Id::from_uuid)
    }
}

/// Marker for [`EventId`].
#[derive(Debug)]
pub enum EventMarker {}
/// Marker for [`CorrelationId`].
#[derive(Debug)]
pub enum CorrelationMarker {}
/// Marker for [`CausationId`].
#[derive(Debug)]
pub enum CausationMarker {}

/// The id of one recorded event (UUID v7), unique within its stream and used for
/// idempotent appends.
pub type EventId = Id<EventMarker>;
/// The id shared by every message of one business action (the first command's id, unless
/// the caller brings one).
pub type CorrelationId = Id<CorrelationMarker>;
/// The id of the message (command or event) that directly caused this one.
pub type CausationId = Id<CausationMarker>;

#[cfg(test)]
mod tests {
    use super::*;

    struct Account;

    #[test]
    fn new_ids_are_v7_and_serialize_as_bare_uuids() {
        let id: Id<Account> = Id::new();
        assert_eq!(id.as_uuid().get_version_num(), 7);
        let json = serde_json::to_string(&id).expect("serialize");
        assert_eq!(json, format!("\"{}\"", id.as_uuid()));
        let back: Id<Account> = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, id);
    }

    #[test]
    fn hostile_id_is_a_typed_error_with_bounded_echo() {
        let hostile = format!("'; DROP TABLE events; --{}", "x".repeat(10_000));
        let err = Id::<Account>::parse(&hostile).expect_err("must fail");
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        assert_eq!(err.reason(), "MALFORMED_ID");
        assert!(err.message().len() < 200, "echo is bounded");
    }

    #[test]
    fn cast_keeps_the_uuid() {
        let id: Id<Account> = Id::new();
        let c: CausationId = id.cast();
        assert_eq!(c.as_uuid(), id.as_uuid());
    }
}
