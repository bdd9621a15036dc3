//! Streams: stream ids, stream versions, global positions and expected-version rules.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::aggregate::Aggregate;
use crate::error::{Error, ErrorCode, FieldViolation};
use crate::id::Id;

/// The name of an event stream, usually `{aggregate type}-{aggregate id}`.
///
/// Any text is allowed and stored literally (quotes, semicolons, any Unicode) within these
/// limits, checked by [`StreamId::new`]: not empty, at most [`StreamId::MAX_LEN`] bytes of
/// UTF-8, and no control characters (NUL cannot be stored by PostgreSQL, and the others make
/// ids that cannot be told apart when printed). Cloning is cheap (a shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(Arc<str>);

impl StreamId {
    /// The largest stream id, in bytes of UTF-8. It keeps one index entry of the SQL
    /// adapters well under PostgreSQL's B-tree limit (about 2.7 kB).
    pub const MAX_LEN: usize = 1024;

    /// A checked stream id. A violation is an `InvalidArgument` error (reason
    /// `INVALID_STREAM_ID`) saying which limit the id broke.
    pub fn new(id: impl AsRef<str>) -> Result<Self, Error> {
        let id = id.as_ref();
        let problem = if id.is_empty() {
            Some("must not be empty".to_owned())
        } else if id.len() > StreamId::MAX_LEN {
            Some(format!(
                "is {} bytes long; the limit is {} bytes",
                id.len(),
                StreamId::MAX_LEN
            ))
        } else {
            id.char_indices()
                .find(|(_, c)| c.is_control())
                .map(|(i, c)| format!("contains the control character {c:?} at byte {i}"))
        };
        match problem {
            None => Ok(StreamId(Arc::from(id))),
            Some(why) => {
                let shown: String = id.chars().take(64).collect();
                Err(Error::invalid_argument(
                    "INVALID_STREAM_ID",
                    format!("stream id {shown:?} {why}"),
                )
                .with_field_violation(FieldViolation::new(
                    "stream_id",
                    ErrorCode::InvalidArgument,
                    "INVALID_STREAM_ID",
                    why,
                )))
            }
        }
    }

    /// The stream of one aggregate: `{A::TYPE}-{id}`.
    pub fn for_aggregate<A: Aggregate>(id: Id<A>) -> Self {
        StreamId(Arc::from(format!("{}-{}", A::TYPE, id)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({:?})", &*self.0)
    }
}
impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl AsRef<str> for StreamId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}
impl Borrow<str> for StreamId {
    fn borrow(&self) -> &str {
        &self.0
    }
}
impl TryFrom<&str> for StreamId {
    type Error = Error;
    fn try_from(value: &str) -> Result<Self, Error> {
        StreamId::new(value)
    }
}
impl TryFrom<String> for StreamId {
    type Error = Error;
    fn try_from(value: String) -> Result<Self, Error> {
        StreamId::new(value)
    }
}
impl Serialize for StreamId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}
impl<'de> Deserialize<'de> for StreamId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        StreamId::new(text).map_err(serde::de::Error::custom)
    }
}

/// The version of a stream: the number of events in it. The first event of a stream has
/// version 1; a stream that does not exist has version 0 ([`StreamVersion::INITIAL`]).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct StreamVersion(pub u64);

impl StreamVersion {
    /// The version of a stream with no events.
    pub const INITIAL: StreamVersion = StreamVersion(0);

    /// The highest version: reading backward from here starts at the stream's last event.
    pub const LATEST: StreamVersion = StreamVersion(u64::MAX);

    /// The version after `n` more events; saturates instead of overflowing.
    pub const fn advanced(self, n: u64) -> StreamVersion {
        StreamVersion(self.0.saturating_add(n))
    }

    /// The number inside.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for StreamVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A position in the store's global order. Positions grow with commit visibility order
/// and are never reused; they may have holes (a rolled-back append consumes positions).
/// The first event of a store has position 1; 0 means "before everything".
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Position(pub u64);

impl Position {
    /// Before the first event: reading all from here reads everything.
    pub const START: Position = Position(0);

    /// The number inside.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What the writer believes about a stream's version before an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "version", rename_all = "snake_case")]
pub enum ExpectedVersion {
    /// No expectation: append whatever the stream's state. Not idempotent.
    Any,
    /// The stream must not exist (version 0).
    NoStream,
    /// The stream must exist (version 1 or more).
    StreamExists,
    /// The stream must be at exactly this version; `Exact(StreamVersion(0))` is `NoStream`.
    Exact(StreamVersion),
}

impl ExpectedVersion {
    /// Whether a stream at version `actual` meets this expectation.
    pub fn accepts(self, actual: StreamVersion) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == StreamVersion::INITIAL,
            ExpectedVersion::StreamExists => actual > StreamVersion::INITIAL,
            ExpectedVersion::Exact(v) => actual == v,
        }
    }

    /// `Ok(())` if a stream at `actual` meets this expectation, else the conflict error
    /// (see [`wrong_expected_version`]).
    pub fn check(self, stream: &StreamId, actual: StreamVersion) -> Result<(), Error> {
        if self.accepts(actual) {
            Ok(())
        } else {
            Err(wrong_expected_version(stream, self, actual))
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("stream exists"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// The reason of the conflict raised by a violated expected version.
pub const WRONG_EXPECTED_VERSION: &str = "WRONG_EXPECTED_VERSION";

/// The conflict (`Aborted`, reason [`WRONG_EXPECTED_VERSION`]) for an append to `stream`
/// that expected `expected` and found `actual`. The details `stream`, `expected` and
/// `actual` carry the values; [`ExpectedVersion`] serializes as
/// `{"kind": "exact", "version": 3}`.
pub fn wrong_expected_version(
    stream: &StreamId,
    expected: ExpectedVersion,
    actual: StreamVersion,
) -> Error {
    Error::conflict(
        WRONG_EXPECTED_VERSION,
        format!("stream {stream:?} expected {expected}, found version {actual}"),
    )
    .with_detail("stream", stream.as_str())
    .with_detail(
        "expected",
        serde_json::to_value(expected).unwrap_or_default(),
    )
    .with_detail("actual", actual.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_stream_ids_are_kept_literally_or_refused_with_the_limit() {
        for ok in ["a'b\"c;--", "ümlaut-流-🦀", &"x".repeat(1000)] {
            assert_eq!(StreamId::new(ok).expect("valid").as_str(), ok);
        }
        let long = StreamId::new("x".repeat(StreamId::MAX_LEN + 1)).expect_err("too long");
        assert_eq!(long.reason(), "INVALID_STREAM_ID");
        assert!(long.message().contains("limit is 1024 bytes"), "{long}");
        let nul = StreamId::new("a\0b").expect_err("NUL");
        assert!(nul.message().contains("control character"), "{nul}");
        assert!(StreamId::new("").is_err());
    }

    #[test]
    fn expectations() {
        let s = StreamId::new("s").expect("valid");
        let v0 = StreamVersion::INITIAL;
        let v3 = StreamVersion(3);
        assert!(ExpectedVersion::Any.accepts(v0) && ExpectedVersion::Any.accepts(v3));
        assert!(ExpectedVersion::NoStream.accepts(v0) && !ExpectedVersion::NoStream.accepts(v3));
        assert!(!ExpectedVersion::StreamExists.accepts(v0));
        assert!(ExpectedVersion::StreamExists.accepts(v3));
        assert!(ExpectedVersion::Exact(v3).accepts(v3));
        assert!(ExpectedVersion::Exact(v0).accepts(v0));
        let err = ExpectedVersion::Exact(StreamVersion(2))
            .check(&s, v3)
            .expect_err("conflict");
        assert_eq!(err.code(), ErrorCode::CONFLICT);
        assert_eq!(err.reason(), WRONG_EXPECTED_VERSION);
        assert_eq!(
            err.detail("expected"),
            Some(&serde_json::json!({"kind": "exact", "version": 2}))
        );
        assert_eq!(err.detail("actual"), Some(&serde_json::json!(3)));
        assert_eq!(err.detail("stream"), Some(&serde_json::json!("s")));
    }
}
