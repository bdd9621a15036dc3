//! Where events keep personal data, for crypto-shredding: the field naming whose data it
//! is (the subject) and the fields that are personal, each with the value readers get
//! once the subject is forgotten.

/// The personal data of one event type, as `#[derive(DomainEvent)]` declares it from
/// `#[personal(subject)]` and `#[personal]` fields.
///
/// Paths are dotted keys into the stored JSON payload: a struct's field is `email`, an
/// enum variant's is `Registered.email` (serde's externally tagged form; serde renames
/// are not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersonalData {
    /// The event type.
    pub event_type: &'static str,
    /// The path of the field naming the subject (a string or a number; stored in clear).
    pub subject: &'static str,
    /// The personal fields.
    pub fields: &'static [PersonalField],
}

/// One personal field of an event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersonalField {
    /// Its path in the payload.
    pub path: &'static str,
    /// The JSON text readers get once the subject is forgotten; `None`: JSON `null` (for
    /// `Option` fields).
    pub replacement: Option<&'static str>,
}
