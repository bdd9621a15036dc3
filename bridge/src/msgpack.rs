//! The MessagePack form (feature `msgpack`): maps with string keys, written with
//! rmp-serde.
//!
//! ```text
//! {"contract_major": 1, "contract_minor": 0,
//!  "ok": {"value": <nested value>} | {"bytes": {"encoding": "...", "data": <bin>}},
//!  "error": {"code": 5, "message": "...", "reason": "...", "domain": "...",
//!            "details": {...}, "field_violations": [...], "correlation_id": "..."},
//!  "metadata": {"position": "1234", ...}}
//! ```
//!
//! Nested values use MessagePack's own types (nil, bool, int, float 64, str, bin, array,
//! map). 64-bit numbers: the envelope's own (positions, versions) travel as decimal strings
//! in `metadata`, exact in every language; integers inside values are MessagePack
//! integers, which a JavaScript reader decodes exactly with
//! `@msgpack/msgpack`'s `decode(bytes, { useBigInt64: true })` (BigInt for any 64-bit
//! integer) — without that option integers above 2^53 lose precision.

use std::collections::BTreeMap;
use std::time::Instant;

use flext_domain::Error;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::budget::{DecodeLimits, NodeCounter};
use crate::metrics::{Format, Observer, Operation};
use crate::wire::{
    Envelope, FieldViolation, Outcome, Payload, Status, Value, check_depth, malformed,
};

const FORMAT: &str = "MessagePack";

#[derive(Serialize, Deserialize)]
struct MpEnvelope {
    contract_major: u32,
    #[serde(default)]
    contract_minor: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ok: Option<MpPayload>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<MpStatus>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    metadata: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct MpPayload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bytes: Option<MpBytes>,
}

#[derive(Serialize, Deserialize)]
struct MpBytes {
    encoding: String,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct MpStatus {
    code: i32,
    #[serde(default)]
    message: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    domain: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    details: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    field_violations: Vec<MpViolation>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    correlation_id: String,
}

#[derive(Serialize, Deserialize)]
struct MpViolation {
    field: String,
    code: i32,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    description: String,
}

fn to_wire(e: &Envelope) -> MpEnvelope {
    let (ok, error) = match &e.outcome {
        Outcome::Ok(Payload::Value(v)) => (
            Some(MpPayload {
                value: Some(v.clone()),
                bytes: None,
            }),
            None,
        ),
        Outcome::Ok(Payload::Bytes { encoding, data }) => (
            Some(MpPayload {
                value: None,
                bytes: Some(MpBytes {
                    encoding: encoding.clone(),
                    data: data.clone(),
                }),
            }),
            None,
        ),
        Outcome::Error(s) => (
            None,
            Some(MpStatus {
                code: s.code,
                message: s.message.clone(),
                reason: s.reason.clone(),
                domain: s.domain.clone(),
                details: s.details.clone(),
                field_violations: s
                    .field_violations
                    .iter()
                    .map(|v| MpViolation {
                        field: v.field.clone(),
                        code: v.code,
                        reason: v.reason.clone(),
                        description: v.description.clone(),
                    })
                    .collect(),
                correlation_id: s.correlation_id.clone(),
            }),
        ),
    };
    MpEnvelope {
        contract_major: e.contract_major,
        contract_minor: e.contract_minor,
        ok,
        error,
        metadata: e.metadata.clone(),
    }
}

fn from_wire(w: MpEnvelope) -> Result<Envelope, Error> {
    let outcome = match (w.ok, w.error) {
        (Some(p), None) => Outcome::Ok(match (p.value, p.bytes) {
            (Some(v), None) => Payload::Value(v),
            (None, Some(b)) => Payload::Bytes {
                encoding: b.encoding,
                data: b.data,
            },
            (None, None) => Payload::Value(Value::Null),
            (Some(_), Some(_)) => {
                return Err(malformed(
                    FORMAT,
                    "\"ok\" holds both \"value\" and \"bytes\"",
                ));
            }
        }),
        (None, Some(s)) => Outcome::Error(Status {
            code: s.code,
            message: s.message,
            details: s.details,
            reason: s.reason,
            domain: s.domain,
            field_violations: s
                .field_violations
                .into_iter()
                .map(|v| FieldViolation {
                    field: v.field,
                    code: v.code,
                    reason: v.reason,
                    description: v.description,
                })
                .collect(),
            correlation_id: s.correlation_id,
        }),
        (None, None) => return Err(malformed(FORMAT, "neither \"ok\" nor \"error\"")),
        (Some(_), Some(_)) => return Err(malformed(FORMAT, "both \"ok\" and \"error\"")),
    };
    Ok(Envelope {
        contract_major: w.contract_major,
        contract_minor: w.contract_minor,
        outcome,
        metadata: w.metadata,
    })
}

/// Encodes `envelope` as MessagePack.
pub fn encode(envelope: &Envelope) -> Result<Vec<u8>, Error> {
    rmp_serde::to_vec_named(&to_wire(envelope)).map_err(|e| {
        Error::internal(
            "ENCODING_FAILED",
            format!("the envelope cannot be written as {FORMAT}: {e}"),
        )
    })
}

/// Decodes MessagePack bytes within the default [`DecodeLimits`]: total on any input (a
/// typed error, never a panic, memory bounded by the input), refusing another contract
/// major version (`UNSUPPORTED_CONTRACT`) and ignoring fields it does not know.
pub fn decode(bytes: &[u8]) -> Result<Envelope, Error> {
    decode_with(bytes, &DecodeLimits::DEFAULT)
}

/// [`decode`] within `limits`: an input over `max_bytes` is `ENVELOPE_TOO_LARGE`, one
/// holding more values than its node budget `ENVELOPE_TOO_COMPLEX` (both
/// `ResourceExhausted`), found before anything is built.
pub fn decode_with(bytes: &[u8], limits: &DecodeLimits) -> Result<Envelope, Error> {
    check_budget(bytes, limits)?;
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(crate::wire::MAX_DEPTH + 8);
    let wire = MpEnvelope::deserialize(&mut de).map_err(|e| malformed(FORMAT, e))?;
    let envelope = from_wire(wire)?;
    envelope.check_contract()?;
    check_depth(FORMAT, &envelope)?;
    Ok(envelope)
}

#[derive(Serialize)]
struct TypedOut<'a, T> {
    contract_major: u32,
    contract_minor: u32,
    ok: TypedPayloadOut<'a, T>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    metadata: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct TypedPayloadOut<'a, T> {
    value: &'a T,
}

#[derive(Deserialize)]
struct TypedIn<T> {
    contract_major: u32,
    #[serde(default)]
    contract_minor: u32,
    #[serde(default = "none")]
    ok: Option<TypedPayloadIn<T>>,
    #[serde(default)]
    error: Option<MpStatus>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

fn none<T>() -> Option<T> {
    None
}

#[derive(Deserialize)]
struct TypedPayloadIn<T> {
    value: T,
}

#[derive(Deserialize)]
struct Header {
    contract_major: u32,
    #[serde(default)]
    contract_minor: u32,
}

/// A decoded envelope whose value was read straight into a `T`.
#[derive(Debug)]
pub struct Decoded<T> {
    /// The writer's contract minor version.
    pub contract_minor: u32,
    /// The value, or the error the envelope carried.
    pub result: Result<T, Error>,
    /// The envelope's metadata.
    pub metadata: BTreeMap<String, String>,
}

/// Encodes a success whose nested value is `value`, serialized straight into the
/// envelope (no [`Value`] tree): the fast path for typed results. Decoders of the
/// [`Value`] form read it like any other nested value.
pub fn encode_ok<T: Serialize>(
    value: &T,
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>, Error> {
    rmp_serde::to_vec_named(&TypedOut {
        contract_major: crate::CONTRACT_MAJOR,
        contract_minor: crate::CONTRACT_MINOR,
        ok: TypedPayloadOut { value },
        metadata,
    })
    .map_err(|e| {
        Error::internal(
            "ENCODING_FAILED",
            format!("the value cannot be written as {FORMAT}: {e}"),
        )
    })
}

/// Decodes an envelope whose success value is a `T`, read straight from the bytes.
/// Decoding problems (malformed bytes, another major version, a value that is not a
/// `T`) are the outer error; the error the envelope carries is `Decoded::result`.
pub fn decode_result<T: DeserializeOwned>(bytes: &[u8]) -> Result<Decoded<T>, Error> {
    decode_result_with(bytes, &DecodeLimits::DEFAULT)
}

/// [`decode_result`] within `limits` (see [`decode_with`]).
pub fn decode_result_with<T: DeserializeOwned>(
    bytes: &[u8],
    limits: &DecodeLimits,
) -> Result<Decoded<T>, Error> {
    check_budget(bytes, limits)?;
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(crate::wire::MAX_DEPTH + 8);
    let wire = match TypedIn::<T>::deserialize(&mut de) {
        Ok(w) => w,
        Err(e) => {
            // Another major version may not fit `T`: say that rather than "malformed".
            let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
            de.set_max_depth(crate::wire::MAX_DEPTH + 8);
            if let Ok(h) = Header::deserialize(&mut de) {
                crate::wire::check_contract(h.contract_major, h.contract_minor)?;
            }
            return Err(malformed(FORMAT, e));
        }
    };
    crate::wire::check_contract(wire.contract_major, wire.contract_minor)?;
    let result = match (wire.ok, wire.error) {
        (Some(p), None) => Ok(p.value),
        (None, Some(s)) => Err(from_wire(MpEnvelope {
            contract_major: wire.contract_major,
            contract_minor: wire.contract_minor,
            ok: None,
            error: Some(s),
            metadata: BTreeMap::new(),
        })?
        .into_result::<serde_json::Value>()
        .err()
        .unwrap_or_else(|| malformed(FORMAT, "an error envelope without an error"))),
        (None, None) => return Err(malformed(FORMAT, "neither \"ok\" nor \"error\"")),
        (Some(_), Some(_)) => return Err(malformed(FORMAT, "both \"ok\" and \"error\"")),
    };
    Ok(Decoded {
        contract_minor: wire.contract_minor,
        result,
        metadata: wire.metadata,
    })
}

/// Refuses `bytes` over the size limit, or holding more objects than their node budget.
fn check_budget(bytes: &[u8], limits: &DecodeLimits) -> Result<(), Error> {
    limits.check_size(FORMAT, bytes.len())?;
    count_objects(bytes, &mut NodeCounter::new(FORMAT, bytes.len(), limits))
}

/// Counts the objects of the first MessagePack object in `bytes` and of everything it
/// nests, from the markers alone: nothing is allocated, whatever the input declares.
fn count_objects(bytes: &[u8], counter: &mut NodeCounter<'_>) -> Result<(), Error> {
    /// The `n`-byte big-endian length or count at `at`, moving past it.
    fn read_len(bytes: &[u8], at: &mut usize, n: usize) -> Result<usize, Error> {
        let field = at
            .checked_add(n)
            .and_then(|end| bytes.get(*at..end))
            .ok_or_else(|| malformed(FORMAT, "the input ends inside a length"))?;
        *at += n;
        let value = field.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b));
        Ok(usize::try_from(value).unwrap_or(usize::MAX))
    }
    let mut at = 0usize;
    // Objects still to read in each open list or map, outermost first.
    let mut open: Vec<usize> = vec![1];
    while let Some(left) = open.last_mut() {
        if *left == 0 {
            open.pop();
            continue;
        }
        *left -= 1;
        let Some(&marker) = bytes.get(at) else {
            return Err(malformed(FORMAT, "the input ends inside a value"));
        };
        at += 1;
        counter.add(1)?;
        let (items, skip) = match marker {
            0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => (0, 0),
            0x80..=0x8f => (2 * usize::from(marker & 0x0f), 0),
            0x90..=0x9f => (usize::from(marker & 0x0f), 0),
            0xa0..=0xbf => (0, usize::from(marker & 0x1f)),
            0xc1 => return Err(malformed(FORMAT, "byte 0xc1 is never used")),
            0xc4 | 0xd9 => (0, read_len(bytes, &mut at, 1)?),
            0xc5 | 0xda => (0, read_len(bytes, &mut at, 2)?),
            0xc6 | 0xdb => (0, read_len(bytes, &mut at, 4)?),
            0xc7 => (0, read_len(bytes, &mut at, 1)?.saturating_add(1)),
            0xc8 => (0, read_len(bytes, &mut at, 2)?.saturating_add(1)),
            0xc9 => (0, read_len(bytes, &mut at, 4)?.saturating_add(1)),
            0xcc | 0xd0 => (0, 1),
            0xcd | 0xd1 | 0xd4 => (0, 2),
            0xd5 => (0, 3),
            0xca | 0xce | 0xd2 => (0, 4),
            0xd6 => (0, 5),
            0xcb | 0xcf | 0xd3 => (0, 8),
            0xd7 => (0, 9),
            0xd8 => (0, 17),
            0xdc => (read_len(bytes, &mut at, 2)?, 0),
            0xdd => (read_len(bytes, &mut at, 4)?, 0),
            0xde => (read_len(bytes, &mut at, 2)?.saturating_mul(2), 0),
            0xdf => (read_len(bytes, &mut at, 4)?.saturating_mul(2), 0),
        };
        at = at
            .checked_add(skip)
            .filter(|end| *end <= bytes.len())
            .ok_or_else(|| malformed(FORMAT, "a string or bytes run past the end of the input"))?;
        if items > 0 {
            // The envelope's own maps are a few levels above its values.
            if open.len() > crate::wire::MAX_DEPTH + 8 {
                return Err(malformed(
                    FORMAT,
                    format_args!("values nest deeper than {}", crate::wire::MAX_DEPTH),
                ));
            }
            // Every object takes a byte at least.
            if items > bytes.len() - at {
                return Err(malformed(
                    FORMAT,
                    "a list or map declares more items than the input holds",
                ));
            }
            open.push(items);
        }
    }
    Ok(())
}

/// [`encode`], reporting to `observer`.
pub fn encode_observed(envelope: &Envelope, observer: &dyn Observer) -> Result<Vec<u8>, Error> {
    let t = Instant::now();
    let out = encode(envelope);
    observer.observe(
        Operation::Encode,
        Format::MessagePack,
        out.as_ref().map_or(0, Vec::len),
        t.elapsed(),
        out.is_ok(),
    );
    out
}

/// [`decode`], reporting to `observer`.
pub fn decode_observed(bytes: &[u8], observer: &dyn Observer) -> Result<Envelope, Error> {
    let t = Instant::now();
    let out = decode(bytes);
    observer.observe(
        Operation::Decode,
        Format::MessagePack,
        bytes.len(),
        t.elapsed(),
        out.is_ok(),
    );
    out
}

/// A stored event as a MessagePack envelope ([`Envelope::of_event`], its payload declared
/// `application/json`): the payload a relay publishes with
/// `Relay::map_payload(flext::bridge::msgpack::encode_event)`.
pub fn encode_event(event: &flext_domain::RecordedEvent) -> Result<Vec<u8>, Error> {
    encode(&Envelope::of_event(event, "application/json"))
}
