//! Entities (equal by identity) and value objects (equal by value, valid by construction).

use std::fmt::Debug;

use crate::error::Error;

/// Something with an identity that outlives changes to its attributes: two entities are
/// the same when their ids are equal, whatever else differs.
///
/// Implement `PartialEq` by identity with [`entity_identity_eq!`](crate::entity_identity_eq).
///
/// ```
/// use flext::{entity_identity_eq, Entity, Id};
///
/// struct Customer { id: Id<Customer>, name: String }
/// impl Entity for Customer {
///     type Id = Id<Customer>;
///     fn id(&self) -> &Id<Customer> { &self.id }
/// }
/// entity_identity_eq!(Customer);
///
/// let id = Id::new();
/// let before = Customer { id, name: "Ada".into() };
/// let after = Customer { id, name: "Ada Lovelace".into() };
/// assert!(before == after);
/// ```
pub trait Entity {
    /// The identity type.
    type Id: Eq;

    /// The identity.
    fn id(&self) -> &Self::Id;

    /// Whether `self` and `other` are the same entity.
    fn same_identity(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

/// Implements `PartialEq`, `Eq` and `Hash` for an [`Entity`] by its id alone.
#[macro_export]
macro_rules! entity_identity_eq {
    ($ty:ty) => {
        impl ::core::cmp::PartialEq for $ty {
            fn eq(&self, other: &Self) -> bool {
                $crate::Entity::same_identity(self, other)
            }
        }
        impl ::core::cmp::Eq for $ty {}
        impl ::core::hash::Hash for $ty {
            fn hash<H: ::core::hash::Hasher>(&self, state: &mut H) {
                ::core::hash::Hash::hash($crate::Entity::id(self), state)
            }
        }
    };
}

/// An immutable value, equal by its contents, that can only exist in a valid state: its
/// one constructor validates and returns flext's [`Error`] (usually `InvalidArgument` with
/// field violations, so a [`Validation`](crate::Validation) can nest it).
///
/// ```
/// use flext::{Error, ValueObject};
///
/// #[derive(Debug, Clone, PartialEq)]
/// struct Amount(i64);
///
/// impl ValueObject for Amount {
///     type Raw = i64;
///     fn try_new(raw: i64) -> Result<Self, Error> {
///         if raw > 0 { Ok(Amount(raw)) }
///         else { Err(Error::invalid_argument("NOT_POSITIVE", format!("{raw} is not > 0"))) }
///     }
/// }
/// assert!(Amount::try_new(0).is_err());
/// ```
pub trait ValueObject: Sized + Clone + PartialEq + Debug {
    /// What the value is built from.
    type Raw;

    /// Validates `raw` and builds the value, or says what is wrong.
    fn try_new(raw: Self::Raw) -> Result<Self, Error>;
}
