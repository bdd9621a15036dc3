//! The one structured error type: a stable code, a reason, a message, details and a source chain.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::id::CorrelationId;

/// `Result` with flext's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A stable error code, aligned with `google.rpc.Code`.
///
/// The numeric values are fixed forever and equal to google.rpc.Code's (`OK = 0` is not an
/// error and has no variant). Other languages read them through the bridge, so a value is
/// never renumbered or reused.
///
/// | code | value | HTTP |
/// |---|---|---|
/// | `Cancelled` | 1 | 499 |
/// | `Unknown` | 2 | 500 |
/// | `InvalidArgument` | 3 | 400 |
/// | `DeadlineExceeded` | 4 | 504 |
/// | `NotFound` | 5 | 404 |
/// | `AlreadyExists` | 6 | 409 |
/// | `PermissionDenied` | 7 | 403 |
/// | `ResourceExhausted` | 8 | 429 |
/// | `FailedPrecondition` | 9 | 400 |
/// | `Aborted` (conflict) | 10 | 409 |
/// | `OutOfRange` | 11 | 400 |
/// | `Unimplemented` | 12 | 501 |
/// | `Internal` | 13 | 500 |
/// | `Unavailable` | 14 | 503 |
/// | `DataLoss` | 15 | 500 |
/// | `Unauthenticated` | 16 | 401 |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(i32)]
pub enum ErrorCode {
    /// The operation was cancelled, typically by the caller.
    Cancelled = 1,
    /// An error with no better code; prefer a specific one.
    Unknown = 2,
    /// The caller's input is invalid whatever the state of the system (bad format, bad value).
    InvalidArgument = 3,
    /// The deadline passed before the operation completed.
    DeadlineExceeded = 4,
    /// A requested entity (stream, aggregate, handler, ...) does not exist.
    NotFound = 5,
    /// The entity the caller tried to create already exists.
    AlreadyExists = 6,
    /// The caller is known but may not do this.
    PermissionDenied = 7,
    /// A quota or capacity is exhausted.
    ResourceExhausted = 8,
    /// The system is not in the state the operation requires (a business rule refused it).
    FailedPrecondition = 9,
    /// A concurrency conflict, such as a violated expected version; retrying the whole
    /// read-decide-write cycle may succeed. Also reachable as [`ErrorCode::CONFLICT`].
    Aborted = 10,
    /// A value is outside the valid range (reading past the end, a version too high).
    OutOfRange = 11,
    /// The operation is not implemented or not supported.
    Unimplemented = 12,
    /// An invariant of the system is broken; a bug, not the caller's fault.
    Internal = 13,
    /// The service is unavailable for now; retrying later may succeed.
    Unavailable = 14,
    /// Unrecoverable data loss or corruption (for example an unreadable stored event).
    DataLoss = 15,
    /// The caller is not authenticated.
    Unauthenticated = 16,
}

impl ErrorCode {
    /// A concurrency conflict: the same code as [`ErrorCode::Aborted`].
    pub const CONFLICT: ErrorCode = ErrorCode::Aborted;

    /// Whether trying again later may succeed with nothing changed: `UNAVAILABLE`,
    /// `DEADLINE_EXCEEDED`, `ABORTED` and `RESOURCE_EXHAUSTED`. The one place flext decides
    /// it: runners retry these without limit and count only the others toward poison.
    ///
    /// ```
    /// use flext::ErrorCode;
    /// assert!(ErrorCode::Unavailable.is_transient());
    /// assert!(!ErrorCode::InvalidArgument.is_transient());
    /// ```
    pub const fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorCode::Unavailable
                | ErrorCode::DeadlineExceeded
                | ErrorCode::Aborted
                | ErrorCode::ResourceExhausted
        )
    }

    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 16] = [
        ErrorCode::Cancelled,
        ErrorCode::Unknown,
        ErrorCode::InvalidArgument,
        ErrorCode::DeadlineExceeded,
        ErrorCode::NotFound,
        ErrorCode::AlreadyExists,
        ErrorCode::PermissionDenied,
        ErrorCode::ResourceExhausted,
        ErrorCode::FailedPrecondition,
        ErrorCode::Aborted,
        ErrorCode::OutOfRange,
        ErrorCode::Unimplemented,
        ErrorCode::Internal,
        ErrorCode::Unavailable,
        ErrorCode::DataLoss,
        ErrorCode::Unauthenticated,
    ];

    /// The numeric value, equal to google.rpc.Code's.
    pub const fn as_i32(self) -> i32 {
        self as i32
    }

    /// The code for a google.rpc.Code number; `None` for 0 (OK) and unknown numbers.
    pub fn from_i32(value: i32) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_i32() == value)
    }

    /// The canonical name, as google.rpc.Code spells it (`"NOT_FOUND"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Cancelled => "CANCELLED",
            ErrorCode::Unknown => "UNKNOWN",
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::DeadlineExceeded => "DEADLINE_EXCEEDED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::AlreadyExists => "ALREADY_EXISTS",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::ResourceExhausted => "RESOURCE_EXHAUSTED",
            ErrorCode::FailedPrecondition => "FAILED_PRECONDITION",
            ErrorCode::Aborted => "ABORTED",
            ErrorCode::OutOfRange => "OUT_OF_RANGE",
            ErrorCode::Unimplemented => "UNIMPLEMENTED",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::DataLoss => "DATA_LOSS",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// The code for a canonical name (`"NOT_FOUND"`); `None` if the name is unknown.
    pub fn from_name(name: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The HTTP status google's API design guide maps this code to.
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidArgument | ErrorCode::FailedPrecondition | ErrorCode::OutOfRange => {
                400
            }
            ErrorCode::Unauthenticated => 401,
            ErrorCode::PermissionDenied => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::AlreadyExists | ErrorCode::Aborted => 409,
            ErrorCode::ResourceExhausted => 429,
            ErrorCode::Cancelled => 499,
            ErrorCode::Unknown | ErrorCode::Internal | ErrorCode::DataLoss => 500,
            ErrorCode::Unimplemented => 501,
            ErrorCode::Unavailable => 503,
            ErrorCode::DeadlineExceeded => 504,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let name = Cow::<'de, str>::deserialize(deserializer)?;
        ErrorCode::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown error code `{name}`")))
    }
}

/// What is put in place of the value of a sensitive key.
pub const REDACTED: &str = "[REDACTED]";

/// Fragments that make a detail key sensitive, compared against the key lower-cased with
/// `_`, `-`, `.` and spaces removed (so `API-Key`, `api_key` and `apiKey` all match `apikey`).
const SENSITIVE_FRAGMENTS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "authorization",
    "credential",
    "privatekey",
    "cookie",
    "sessionid",
    "signature",
];

/// Whether a detail key looks sensitive (password, secret, token, api key, authorization,
/// credential, private key, cookie, session id, signature), so its value is redacted.
pub fn is_sensitive_key(key: &str) -> bool {
    let normalized: String = key
        .chars()
        .filter(|c| !matches!(c, '_' | '-' | '.' | ' '))
        .flat_map(char::to_lowercase)
        .collect();
    SENSITIVE_FRAGMENTS.iter().any(|f| normalized.contains(f))
}

/// Replaces, at any depth, the value of every sensitive key with [`REDACTED`].
fn redact(key: &str, value: Value) -> Value {
    if is_sensitive_key(key) {
        return Value::String(REDACTED.to_owned());
    }
    redact_nested(value)
}

fn redact_nested(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = redact(&k, v);
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(redact_nested).collect()),
        other => other,
    }
}

/// One invalid field of an input: where, which code, why.
///
/// `field` is a path such as `items[2].amount` (see [`crate::Validation`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldViolation {
    /// The path of the field, e.g. `owner.email` or `items[2].amount`.
    pub field: String,
    /// The code of this violation (usually `InvalidArgument`).
    pub code: ErrorCode,
    /// A machine-readable reason in UPPER_SNAKE_CASE, e.g. `MUST_BE_POSITIVE`.
    pub reason: Cow<'static, str>,
    /// A human-readable description of what is wrong.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field` with the given code, reason and description.
    pub fn new(
        field: impl Into<String>,
        code: ErrorCode,
        reason: impl Into<Cow<'static, str>>,
        description: impl Into<String>,
    ) -> Self {
        FieldViolation {
            field: field.into(),
            code,
            reason: reason.into(),
            description: description.into(),
        }
    }
}

/// A cause in a source chain that was rebuilt from its message (after deserialization).
#[derive(Debug)]
struct Cause {
    message: String,
    source: Option<Arc<Cause>>,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for Cause {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|c| c as &(dyn StdError + 'static))
    }
}

#[derive(Clone)]
struct Inner {
    code: ErrorCode,
    reason: Cow<'static, str>,
    message: Cow<'static, str>,
    field_violations: Vec<FieldViolation>,
    details: BTreeMap<String, Value>,
    correlation_id: Option<CorrelationId>,
    source: Option<Arc<dyn StdError + Send + Sync + 'static>>,
}

/// flext's one structured error.
///
/// It carries a stable [`ErrorCode`], a machine-readable `reason` (UPPER_SNAKE_CASE, stable
/// per cause, e.g. `INSUFFICIENT_FUNDS`), a human-readable message, structured details (field
/// violations and key/value data), an optional source chain and an optional correlation id.
///
/// The value of every detail whose key looks sensitive (see [`is_sensitive_key`]) is replaced
/// with [`REDACTED`] when it is added, at any depth of nesting, so no `Display`, `Debug` or
/// serialized form of the error can show it. Messages and source errors are shown as given:
/// never put secrets in them.
///
/// The error is one pointer wide, so `Result<T, Error>` stays small, and cheap to clone.
///
/// ```
/// use flext::{Error, ErrorCode};
///
/// let err = Error::failed_precondition("INSUFFICIENT_FUNDS", "balance too low")
///     .with_detail("balance", 10)
///     .with_detail("api_key", "sk-live-123");
/// assert_eq!(err.code(), ErrorCode::FailedPrecondition);
/// assert_eq!(err.reason(), "INSUFFICIENT_FUNDS");
/// assert!(!err.to_string().contains("sk-live-123"));
/// ```
#[derive(Clone)]
pub struct Error(Box<Inner>);

macro_rules! code_constructors {
    ($($(#[$doc:meta])* $name:ident => $code:ident;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(
                reason: impl Into<Cow<'static, str>>,
                message: impl Into<Cow<'static, str>>,
            ) -> Self {
                Error::new(ErrorCode::$code, reason, message)
            }
        )*
    };
}

impl Error {
    /// An error with a code, a machine-readable reason and a message.
    pub fn new(
        code: ErrorCode,
        reason: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Error(Box::new(Inner {
            code,
            reason: reason.into(),
            message: message.into(),
            field_violations: Vec::new(),
            details: BTreeMap::new(),
            correlation_id: None,
            source: None,
        }))
    }

    code_constructors! {
        /// `InvalidArgument`: the input is wrong whatever the state.
        invalid_argument => InvalidArgument;
        /// `NotFound`: the thing asked for does not exist.
        not_found => NotFound;
        /// `AlreadyExists`: the thing to create exists already.
        already_exists => AlreadyExists;
        /// `Aborted`: a concurrency conflict; the read-decide-write cycle may be retried.
        conflict => Aborted;
        /// `FailedPrecondition`: a business rule refused the operation in the current state.
        failed_precondition => FailedPrecondition;
        /// `OutOfRange`: a value past the valid range.
        out_of_range => OutOfRange;
        /// `PermissionDenied`: the caller may not do this.
        permission_denied => PermissionDenied;
        /// `Unauthenticated`: the caller is not authenticated.
        unauthenticated => Unauthenticated;
        /// `ResourceExhausted`: a quota or capacity is exhausted.
        resource_exhausted => ResourceExhausted;
        /// `Unavailable`: try again later.
        unavailable => Unavailable;
        /// `DeadlineExceeded`: the deadline passed.
        deadline_exceeded => DeadlineExceeded;
        /// `Cancelled`: the caller cancelled.
        cancelled => Cancelled;
        /// `Unimplemented`: not supported.
        unimplemented => Unimplemented;
        /// `Internal`: a broken invariant, a bug.
        internal => Internal;
        /// `DataLoss`: stored data is unreadable or lost.
        data_loss => DataLoss;
    }

    /// Adds a key/value detail. The value of a sensitive key, and of sensitive keys nested
    /// in objects of the value, is replaced with [`REDACTED`]. A key added twice keeps the
    /// last value.
    #[must_use]
    pub fn with_detail(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.insert_detail(key.into(), value.into());
        self
    }

    fn insert_detail(&mut self, key: String, value: Value) {
        let value = redact(&key, value);
        self.0.details.insert(key, value);
    }

    /// Adds a field violation.
    #[must_use]
    pub fn with_field_violation(mut self, violation: FieldViolation) -> Self {
        self.0.field_violations.push(violation);
        self
    }

    /// Adds field violations, keeping their order.
    #[must_use]
    pub fn with_field_violations(
        mut self,
        violations: impl IntoIterator<Item = FieldViolation>,
    ) -> Self {
        self.0.field_violations.extend(violations);
        self
    }

    /// Sets the correlation id of the business action this error belongs to.
    #[must_use]
    pub fn with_correlation_id(mut self, id: CorrelationId) -> Self {
        self.0.correlation_id = Some(id);
        self
    }

    /// Sets the underlying cause, returned by [`std::error::Error::source`].
    #[must_use]
    pub fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.0.source = Some(Arc::new(source));
        self
    }

    /// Replaces the message, keeping everything else.
    #[must_use]
    pub fn with_message(mut self, message: impl Into<Cow<'static, str>>) -> Self {
        self.0.message = message.into();
        self
    }

    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        self.0.code
    }

    /// The machine-readable reason, e.g. `INSUFFICIENT_FUNDS`.
    pub fn reason(&self) -> &str {
        &self.0.reason
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The field violations, in the order they were added.
    pub fn field_violations(&self) -> &[FieldViolation] {
        &self.0.field_violations
    }

    /// The key/value details, sensitive values already redacted.
    pub fn details(&self) -> &BTreeMap<String, Value> {
        &self.0.details
    }

    /// One detail by key.
    pub fn detail(&self, key: &str) -> Option<&Value> {
        self.0.details.get(key)
    }

    /// The correlation id, if one was set.
    pub fn correlation_id(&self) -> Option<CorrelationId> {
        self.0.correlation_id
    }

    /// Whether trying again later may succeed: its code is transient
    /// ([`ErrorCode::is_transient`]).
    pub fn is_transient(&self) -> bool {
        self.code().is_transient()
    }

    /// Whether the error has this code.
    pub fn is(&self, code: ErrorCode) -> bool {
        self.0.code == code
    }

    /// The messages of the source chain, nearest cause first.
    pub fn causes(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut next = StdError::source(self);
        while let Some(cause) = next {
            out.push(cause.to_string());
            next = cause.source();
        }
        out
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.0;
        write!(f, "{} [{}]: {}", inner.code, inner.reason, inner.message)?;
        for (i, v) in inner.field_violations.iter().enumerate() {
            let sep = if i == 0 { " (" } else { "; " };
            write!(f, "{sep}{}: {} {}", v.field, v.reason, v.description)?;
        }
        if !inner.field_violations.is_empty() {
            f.write_str(")")?;
        }
        for (i, (k, v)) in inner.details.iter().enumerate() {
            let sep = if i == 0 { " {" } else { ", " };
            write!(f, "{sep}{k}={v}")?;
        }
        if !inner.details.is_empty() {
            f.write_str("}")?;
        }
        // `{:#}`: the cause chain too, nearest first.
        if f.alternate() {
            let mut next = StdError::source(self);
            while let Some(cause) = next {
                write!(f, ": {cause}")?;
                next = cause.source();
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.0;
        let mut s = f.debug_struct("Error");
        s.field("code", &inner.code)
            .field("reason", &inner.reason)
            .field("message", &inner.message);
        if !inner.field_violations.is_empty() {
            s.field("field_violations", &inner.field_violations);
        }
        if !inner.details.is_empty() {
            s.field("details", &inner.details);
        }
        if let Some(id) = &inner.correlation_id {
            s.field("correlation_id", id);
        }
        if inner.source.is_some() {
            s.field("causes", &self.causes());
        }
        s.finish()
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0
            .source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

/// The serialized shape of an [`Error`]; the source chain travels as its messages.
#[derive(Serialize, Deserialize)]
struct ErrorRepr {
    code: ErrorCode,
    reason: String,
    message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    field_violations: Vec<FieldViolation>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    details: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    correlation_id: Option<CorrelationId>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    causes: Vec<String>,
}

impl Serialize for Error {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let inner = &*self.0;
        ErrorRepr {
            code: inner.code,
            reason: inner.reason.to_string(),
            message: inner.message.to_string(),
            field_violations: inner.field_violations.clone(),
            details: inner.details.clone(),
            correlation_id: inner.correlation_id,
            causes: self.causes(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Error {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let repr = ErrorRepr::deserialize(deserializer)?;
        let mut err = Error::new(repr.code, repr.reason, repr.message)
            .with_field_violations(repr.field_violations);
        for (k, v) in repr.details {
            err.insert_detail(k, v);
        }
        err.0.correlation_id = repr.correlation_id;
        let chain = repr.causes.into_iter().rev().fold(None, |next, message| {
            Some(Arc::new(Cause {
                message,
                source: next,
            }))
        });
        if let Some(cause) = chain {
            err.0.source = Some(cause);
        }
        Ok(err)
    }
}

/// A JSON value that did not encode or decode (`serde_json`'s error, kept as the source),
/// so code of your own turns it into a flext error with `?`: `INVALID_ARGUMENT` with
/// reason `INVALID_JSON` and serde's words (line and column for a syntax error). Where the
/// JSON came from storage and is now unreadable, map it to `data_loss` yourself: that is
/// a fact about the data the conversion cannot know.
impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::invalid_argument("INVALID_JSON", format!("invalid JSON: {e}")).with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn exactly_four_codes_are_transient() {
        let transient: Vec<ErrorCode> = ErrorCode::ALL
            .into_iter()
            .filter(|c| c.is_transient())
            .collect();
        assert_eq!(
            transient,
            [
                ErrorCode::DeadlineExceeded,
                ErrorCode::ResourceExhausted,
                ErrorCode::Aborted,
                ErrorCode::Unavailable
            ]
        );
        assert!(Error::unavailable("DOWN", "down").is_transient());
        assert!(!Error::data_loss("LOST", "lost").is_transient());
    }

    #[test]
    fn numeric_codes_match_google_rpc() {
        let expected = [
            (ErrorCode::Cancelled, 1),
            (ErrorCode::Unknown, 2),
            (ErrorCode::InvalidArgument, 3),
            (ErrorCode::DeadlineExceeded, 4),
            (ErrorCode::NotFound, 5),
            (ErrorCode::AlreadyExists, 6),
            (ErrorCode::PermissionDenied, 7),
            (ErrorCode::ResourceExhausted, 8),
            (ErrorCode::FailedPrecondition, 9),
            (ErrorCode::Aborted, 10),
            (ErrorCode::OutOfRange, 11),
            (ErrorCode::Unimplemented, 12),
            (ErrorCode::Internal, 13),
            (ErrorCode::Unavailable, 14),
            (ErrorCode::DataLoss, 15),
            (ErrorCode::Unauthenticated, 16),
        ];
        for (code, n) in expected {
            assert_eq!(code.as_i32(), n, "{code}");
            assert_eq!(ErrorCode::from_i32(n), Some(code));
            assert_eq!(ErrorCode::from_name(code.as_str()), Some(code));
        }
        assert_eq!(ErrorCode::from_i32(0), None);
        assert_eq!(ErrorCode::from_i32(17), None);
        assert_eq!(ErrorCode::CONFLICT, ErrorCode::Aborted);
    }

    #[test]
    fn sensitive_keys_are_recognised_in_any_spelling() {
        for key in [
            "password",
            "db_password",
            "API-Key",
            "apiKey",
            "Authorization",
            "refresh_token",
            "client.secret",
            "Set-Cookie",
        ] {
            assert!(is_sensitive_key(key), "{key}");
        }
        for key in ["account_id", "amount", "author", "email"] {
            assert!(!is_sensitive_key(key), "{key}");
        }
    }

    #[test]
    fn serde_round_trip_keeps_everything_but_concrete_source_types() {
        let io = std::io::Error::other("disk gone");
        let id = CorrelationId::from_uuid(uuid::Uuid::from_u128(7));
        let err = Error::unavailable("STORE_DOWN", "event store unreachable")
            .with_detail("attempts", 3)
            .with_field_violation(FieldViolation::new(
                "stream",
                ErrorCode::InvalidArgument,
                "EMPTY",
                "must not be empty",
            ))
            .with_correlation_id(id)
            .with_source(io);
        let text = serde_json::to_string(&err).expect("serialize");
        let back: Error = serde_json::from_str(&text).expect("deserialize");
        assert_eq!(back.code(), ErrorCode::Unavailable);
        assert_eq!(back.reason(), "STORE_DOWN");
        assert_eq!(back.message(), "event store unreachable");
        assert_eq!(back.detail("attempts"), Some(&json!(3)));
        assert_eq!(back.field_violations(), err.field_violations());
        assert_eq!(back.correlation_id(), Some(id));
        assert_eq!(back.causes(), vec!["disk gone".to_owned()]);
        assert_eq!(serde_json::to_string(&back).expect("serialize"), text);
    }

    #[test]
    fn unknown_code_name_is_a_clear_error() {
        let err = serde_json::from_str::<Error>(r#"{"code":"NOPE","reason":"R","message":"m"}"#)
            .expect_err("must fail");
        assert!(
            err.to_string().contains("unknown error code `NOPE`"),
            "{err}"
        );
    }

    #[test]
    fn error_is_one_pointer_wide() {
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
    }
}
