//! The JSON codec and the upcasting contract: stored payloads are upgraded step by step.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use flext_domain::{DomainEvent, Error, EventRef};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::codec::EventCodec;
use crate::event_store::corrupted_event;

type Step = Arc<dyn Fn(Value) -> Result<Value, Error> + Send + Sync>;

/// Upcasters keyed by (event type, schema version): each turns a payload of version `v`
/// into one of version `v + 1`. A stored event is upgraded step by step, in memory, every
/// time it is read; storage is never rewritten.
///
/// The payload a step sees is the JSON the codec wrote for the whole event value (for an
/// externally tagged enum, `{"Deposited": {...}}`).
///
/// ```
/// use flext::ports::Upcasters;
///
/// let upcasters = Upcasters::new()
///     .with("account.deposited", 1, |mut v| {
///         // v1 stored `amount` in whole units; v2 stores cents.
///         let d = &mut v["Deposited"];
///         d["cents"] = (d["amount"].as_i64().unwrap_or(0) * 100).into();
///         Ok(v)
///     })?;
/// assert!(upcasters.has_step("account.deposited", 1));
/// # Ok::<(), flext::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct Upcasters {
    /// Event type -> from-version -> step; looked up by `&str` without allocating.
    steps: HashMap<String, BTreeMap<u32, Step>>,
}

impl fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<(&str, u32)> = self
            .steps
            .iter()
            .flat_map(|(t, v)| v.keys().map(move |k| (t.as_str(), *k)))
            .collect();
        keys.sort();
        f.debug_struct("Upcasters").field("steps", &keys).finish()
    }
}

impl Upcasters {
    /// No upcasters.
    pub fn new() -> Self {
        Upcasters::default()
    }

    /// Adds the step from `from_version` to `from_version + 1` of `event_type`. A second
    /// step for the same key is an `AlreadyExists` error.
    pub fn with<F>(mut self, event_type: &str, from_version: u32, step: F) -> Result<Self, Error>
    where
        F: Fn(Value) -> Result<Value, Error> + Send + Sync + 'static,
    {
        let per_type = self.steps.entry(event_type.to_owned()).or_default();
        if per_type.contains_key(&from_version) {
            return Err(Error::already_exists(
                "DUPLICATE_UPCASTER",
                format!(
                    "an upcaster for {event_type} from version {from_version} is already registered"
                ),
            ));
        }
        per_type.insert(from_version, Arc::new(step));
        Ok(self)
    }

    /// Whether a step from `from_version` of `event_type` is registered.
    pub fn has_step(&self, event_type: &str, from_version: u32) -> bool {
        self.steps
            .get(event_type)
            .is_some_and(|per_type| per_type.contains_key(&from_version))
    }

    /// Runs every step from `version` on, returning the payload and the version reached.
    pub fn upcast(
        &self,
        event_type: &str,
        mut version: u32,
        mut payload: Value,
    ) -> Result<(Value, u32), Error> {
        let Some(per_type) = self.steps.get(event_type) else {
            return Ok((payload, version));
        };
        while let Some(step) = per_type.get(&version) {
            payload = step(payload).map_err(|e| {
                e.with_detail("event_type", event_type)
                    .with_detail("from_version", version)
            })?;
            version += 1;
        }
        Ok((payload, version))
    }
}

/// Encodes events as JSON with serde, and decodes them straight from the stored bytes,
/// going through a `serde_json::Value` only when an upcaster applies.
///
/// After decoding, the event's [`DomainEvent::schema_version`] must equal the version the
/// payload reached; otherwise a step is missing (`Unimplemented`, reason
/// `MISSING_UPCASTER`, naming the type and both versions) or the payload is newer than this
/// program (`FailedPrecondition`, reason `SCHEMA_VERSION_TOO_NEW`). A payload that is not
/// valid for the type is `DataLoss`, reason `CORRUPTED_EVENT`, naming stream and version.
#[derive(Debug, Clone, Default)]
pub struct JsonCodec {
    upcasters: Upcasters,
}

impl JsonCodec {
    /// A codec with no upcasters.
    pub fn new() -> Self {
        JsonCodec::default()
    }

    /// A codec that upcasts with `upcasters`.
    pub fn with_upcasters(upcasters: Upcasters) -> Self {
        JsonCodec { upcasters }
    }
}

impl<E> EventCodec<E> for JsonCodec
where
    E: Serialize + DeserializeOwned + DomainEvent,
{
    fn encode(&self, event: &E) -> Result<Bytes, Error> {
        serde_json::to_vec(event).map(Bytes::from).map_err(|e| {
            Error::invalid_argument(
                "UNENCODABLE_EVENT",
                format!(
                    "event {} cannot be encoded as JSON: {e}",
                    event.event_type()
                ),
            )
        })
    }

    fn decode(&self, recorded: EventRef<'_>) -> Result<E, Error> {
        let stored = recorded.schema_version;
        let known = E::current_schema_version(recorded.event_type);
        let corrupted = |e: serde_json::Error| {
            let hint = if known.is_none() {
                format!(
                    " (it was stored with schema version {stored}; if the type's shape changed \
                     since, an upcaster from version {stored} is missing)"
                )
            } else {
                String::new()
            };
            corrupted_event(
                recorded.stream_id.as_str(),
                recorded.stream_version.0 as i64,
                format_args!(
                    "its {} payload does not decode: {e}{hint}",
                    recorded.event_type
                ),
            )
        };
        let event = if self.upcasters.has_step(recorded.event_type, stored) {
            let value: Value = serde_json::from_slice(recorded.payload).map_err(corrupted)?;
            let (value, reached) = self.upcasters.upcast(recorded.event_type, stored, value)?;
            if let Some(current) = known {
                check_version(&recorded, reached, current)?;
            }
            let event = serde_json::from_value::<E>(value).map_err(corrupted)?;
            check_version(&recorded, reached, event.schema_version())?;
            event
        } else {
            if let Some(current) = known {
                check_version(&recorded, stored, current)?;
            }
            let event = serde_json::from_slice::<E>(recorded.payload).map_err(corrupted)?;
            check_version(&recorded, stored, event.schema_version())?;
            event
        };
        Ok(event)
    }
}

/// `Ok` when the payload's version after upcasting is the type's current one; otherwise
/// the missing-upcaster or too-new error naming type and versions.
fn check_version(recorded: &EventRef<'_>, reached: u32, current: u32) -> Result<(), Error> {
    if reached == current {
        return Ok(());
    }
    let stored = recorded.schema_version;
    let err = if reached < current {
        Error::unimplemented(
            "MISSING_UPCASTER",
            format!(
                "no upcaster for {} from schema version {reached} to {} (stored as {stored}, current {current})",
                recorded.event_type,
                reached + 1
            ),
        )
    } else {
        Error::failed_precondition(
            "SCHEMA_VERSION_TOO_NEW",
            format!(
                "{} was stored with schema version {reached}; this program reads up to {current}",
                recorded.event_type
            ),
        )
    };
    Err(err
        .with_detail("event_type", recorded.event_type)
        .with_detail("stored_version", stored)
        .with_detail("current_version", current)
        .with_detail("stream", recorded.stream_id.as_str())
        .with_detail("version", recorded.stream_version.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flext_domain::{EventId, EventMetadata, Position, RecordedEvent, StreamId, StreamVersion};
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Ev {
        Deposited { cents: i64 },
    }
    impl DomainEvent for Ev {
        fn event_type(&self) -> &'static str {
            "deposited"
        }
        fn schema_version(&self) -> u32 {
            3
        }
    }

    fn recorded(version: u32, payload: &str) -> RecordedEvent {
        RecordedEvent {
            event_id: EventId::new(),
            stream_id: StreamId::new("acc-1").expect("valid"),
            stream_version: StreamVersion(7),
            position: Position(70),
            recorded_at: chrono::DateTime::UNIX_EPOCH,
            event_type: "deposited".into(),
            schema_version: version,
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            metadata: EventMetadata::default(),
            tags: Vec::new(),
        }
    }

    fn upcasters() -> Upcasters {
        Upcasters::new()
            .with("deposited", 1, |mut v| {
                v["Deposited"]["units"] = v["Deposited"]["amount"].take();
                Ok(v)
            })
            .and_then(|u| {
                u.with("deposited", 2, |mut v| {
                    let units = v["Deposited"]["units"].as_i64().unwrap_or(0);
                    v["Deposited"] = serde_json::json!({ "cents": units * 100 });
                    Ok(v)
                })
            })
            .expect("distinct steps")
    }

    #[test]
    fn upcasts_step_by_step_and_decodes_current_directly() {
        let codec = JsonCodec::with_upcasters(upcasters());
        let v1: Ev = codec
            .decode(recorded(1, r#"{"Deposited":{"amount":5}}"#).as_event_ref())
            .expect("v1");
        assert_eq!(v1, Ev::Deposited { cents: 500 });
        let v3: Ev = codec
            .decode(recorded(3, r#"{"Deposited":{"cents":7}}"#).as_event_ref())
            .expect("v3");
        assert_eq!(v3, Ev::Deposited { cents: 7 });
    }

    #[test]
    fn a_missing_step_names_type_and_versions() {
        let codec = JsonCodec::new();
        let err = EventCodec::<Ev>::decode(
            &codec,
            recorded(2, r#"{"Deposited":{"cents":7}}"#).as_event_ref(),
        )
        .expect_err("missing step");
        assert_eq!(err.reason(), "MISSING_UPCASTER");
        assert!(
            err.message()
                .contains("deposited from schema version 2 to 3"),
            "{err}"
        );
        let newer = EventCodec::<Ev>::decode(
            &codec,
            recorded(4, r#"{"Deposited":{"cents":7}}"#).as_event_ref(),
        )
        .expect_err("too new");
        assert_eq!(newer.reason(), "SCHEMA_VERSION_TOO_NEW");
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Known {
        Deposited { cents: i64 },
    }
    impl DomainEvent for Known {
        fn event_type(&self) -> &'static str {
            "deposited"
        }
        fn schema_version(&self) -> u32 {
            2
        }
        fn current_schema_version(_: &str) -> Option<u32> {
            Some(2)
        }
    }

    #[test]
    fn a_type_that_knows_its_version_reports_the_missing_step_before_decoding() {
        let err = EventCodec::<Known>::decode(
            &JsonCodec::new(),
            recorded(1, r#"{"Deposited":{"amount":5}}"#).as_event_ref(),
        )
        .expect_err("missing step");
        assert_eq!(err.reason(), "MISSING_UPCASTER", "{err}");
        let unknown = EventCodec::<Ev>::decode(
            &JsonCodec::new(),
            recorded(1, r#"{"Deposited":{"amount":5}}"#).as_event_ref(),
        )
        .expect_err("undecodable");
        assert!(
            unknown
                .message()
                .contains("an upcaster from version 1 is missing"),
            "{unknown}"
        );
    }

    #[test]
    fn garbage_is_data_loss_naming_stream_and_version() {
        let err = EventCodec::<Ev>::decode(
            &JsonCodec::new(),
            recorded(3, "\u{1}garbage").as_event_ref(),
        )
        .expect_err("corrupt");
        assert_eq!(err.code(), flext_domain::ErrorCode::DataLoss);
        assert!(
            err.message().contains("event 7 of stream \"acc-1\""),
            "{err}"
        );
    }

    #[test]
    fn duplicate_steps_are_refused() {
        let err = upcasters().with("deposited", 1, Ok).expect_err("duplicate");
        assert_eq!(err.reason(), "DUPLICATE_UPCASTER");
    }
}
