//! flext's cross-language result contract.
//!
//! A handler's result crosses to Python, Go or TypeScript as an [`Envelope`]: contract
//! version, a value ([`Payload`]: bytes in a declared encoding, or a nested [`Value`]) or
//! an error ([`Status`], aligned with `google.rpc.Status`), and string metadata. The wire
//! types are this crate's own, converted from and to the domain's by hand, so how events
//! are stored never leaks into the contract. Two encodings of the same contract:
//!
//! - [`msgpack`] (feature `msgpack`): maps with string keys;
//! - [`protobuf`] (feature `protobuf`): `proto/flext/bridge/v1/bridge.proto`, package
//!   `flext.bridge.v1`, which other languages compile.
//!
//! Readers accept the same major version and ignore unknown fields; another major is
//! `FailedPrecondition`/`UNSUPPORTED_CONTRACT`. Decoding is total: any bytes give an
//! envelope or a typed error, never a panic, with memory bounded by the input. The v1
//! bytes are pinned by golden files (`tests/golden/v1/`) that a Python program checks with
//! the `msgpack` and `protobuf` packages. Also: [`problem_details`] (RFC 9457) and type
//! descriptors ([`Describe`]) exported as JSON Schema.
//!
//! ```
//! use flext::bridge::{Envelope, Value, msgpack, protobuf};
//! use flext::{Error, Position};
//!
//! let ok = Envelope::ok_value(Value::from(42u64)).with_position(Position(7));
//! assert_eq!(msgpack::decode(&msgpack::encode(&ok)?)?, ok);
//! assert_eq!(protobuf::decode(&protobuf::encode(&ok))?, ok);
//!
//! let failed = Envelope::error(&Error::not_found("NO_ACCOUNT", "no such account"), "bank");
//! let back = protobuf::decode(&protobuf::encode(&failed))?;
//! let err = back.into_result::<u64>().unwrap_err();
//! assert_eq!(err.reason(), "NO_ACCOUNT");
//! # Ok::<(), Error>(())
//! ```

mod budget;
mod describe;
pub mod metrics;
#[cfg(feature = "msgpack")]
pub mod msgpack;
mod problem;
#[cfg(feature = "protobuf")]
pub mod protobuf;
mod value_de;
pub use value_de::ValueError;
mod wire;

pub use budget::DecodeLimits;
pub use describe::{Bytes, Describe, Language, TypeDescriptor};
pub use metrics::{Format, Observer, Operation};
pub use problem::{PROBLEM_JSON, problem_details};
pub use wire::{
    CONTRACT_MAJOR, CONTRACT_MINOR, Envelope, FieldViolation, MAX_DEPTH, MAX_ENVELOPE_BYTES,
    Outcome, Payload, Status, Value,
};
