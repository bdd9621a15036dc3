//! The canonical v1 envelopes the golden files hold.

#![allow(dead_code)]

use std::collections::BTreeMap;

use flext_bridge::{Envelope, Value};
use flext_domain::{CorrelationId, Error, ErrorCode, FieldViolation, Position};

pub(crate) fn correlation() -> CorrelationId {
    CorrelationId::from_uuid(uuid_from(0x0192_3b4c_5d6e_7f80_9123_4567_89ab_cdef))
}

fn uuid_from(n: u128) -> uuid::Uuid {
    uuid::Uuid::from_u128(n)
}

/// (name, envelope): every shape v1 promises.
pub(crate) fn cases() -> Vec<(&'static str, Envelope)> {
    let mut nested = BTreeMap::new();
    nested.insert("account".to_owned(), Value::from("acc-1"));
    nested.insert("balance".to_owned(), Value::Int(-1_250));
    nested.insert("big".to_owned(), Value::UInt(u64::MAX));
    nested.insert("exact".to_owned(), Value::Int(9_007_199_254_740_993)); // 2^53 + 1
    nested.insert("rate".to_owned(), Value::Float(0.125));
    nested.insert("open".to_owned(), Value::Bool(true));
    nested.insert("closed_at".to_owned(), Value::Null);
    nested.insert("raw".to_owned(), Value::Bytes(vec![0, 1, 2, 254, 255]));
    nested.insert(
        "tags".to_owned(),
        Value::List(vec![Value::from("gold"), Value::from("euro")]),
    );
    vec![
        ("ok_value", Envelope::ok_value(Value::Map(nested))),
        (
            "ok_bytes",
            Envelope::ok_bytes("application/json", br#"{"balance":100}"#.to_vec()),
        ),
        (
            "ok_metadata",
            Envelope::ok_value(Value::from(7u64))
                .with_position(Position((1u64 << 62) + 3))
                .with_metadata("stream_version", "12")
                .with_metadata("correlation_id", correlation().to_string()),
        ),
        (
            "error_plain",
            Envelope::error(&Error::not_found("NO_ACCOUNT", "no account acc-9"), "bank"),
        ),
        (
            "error_details",
            Envelope::error(
                &Error::failed_precondition("INSUFFICIENT_FUNDS", "the balance is 10, 30 asked")
                    .with_detail("balance", 10)
                    .with_detail("asked", 30)
                    .with_detail("password", "hunter2")
                    .with_detail("limits", serde_json::json!({"daily": 500, "token": "abc"})),
                "bank",
            ),
        ),
        (
            "error_fields",
            Envelope::error(
                &Error::invalid_argument("INVALID_COMMAND", "the command is invalid")
                    .with_field_violation(FieldViolation::new(
                        "amount",
                        ErrorCode::InvalidArgument,
                        "NOT_POSITIVE",
                        "must be greater than 0",
                    ))
                    .with_field_violation(FieldViolation::new(
                        "items[2].sku",
                        ErrorCode::InvalidArgument,
                        "EMPTY",
                        "must not be empty",
                    )),
                "bank",
            ),
        ),
        (
            "error_correlated",
            Envelope::error(
                &Error::unavailable("STORE_UNAVAILABLE", "the store is unavailable")
                    .with_correlation_id(correlation())
                    .with_source(std::io::Error::other("connection reset by peer")),
                "bank",
            ),
        ),
    ]
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A value with its type spelled out, as the Python checker builds it from what it
/// decoded: `{"int": "123"}`, `{"bytes_hex": "00ff"}`, ...
pub(crate) fn tagged(v: &Value) -> serde_json::Value {
    use serde_json::json;
    match v {
        Value::Null => json!({"null": true}),
        Value::Bool(b) => json!({"bool": b}),
        Value::Int(i) => json!({"int": i.to_string()}),
        Value::UInt(u) => json!({"int": u.to_string()}),
        Value::Float(f) => json!({"float": f}),
        Value::String(s) => json!({"string": s}),
        Value::Bytes(b) => json!({"bytes_hex": hex(b)}),
        Value::List(l) => json!({"list": l.iter().map(tagged).collect::<Vec<_>>()}),
        Value::Map(m) => {
            json!({"map": m.iter().map(|(k, v)| (k.clone(), tagged(v))).collect::<serde_json::Map<_, _>>()})
        }
    }
}

/// Every field of an envelope, as the Python checker compares them.
pub(crate) fn view(e: &Envelope) -> serde_json::Value {
    use flext_bridge::{Outcome, Payload};
    use serde_json::json;
    let mut out = json!({
        "contract_major": e.contract_major,
        "contract_minor": e.contract_minor,
        "metadata": e.metadata,
    });
    match &e.outcome {
        Outcome::Ok(Payload::Value(v)) => out["ok"] = json!({"value": tagged(v)}),
        Outcome::Ok(Payload::Bytes { encoding, data }) => {
            out["ok"] = json!({"bytes": {"encoding": encoding, "data_hex": hex(data)}})
        }
        Outcome::Error(s) => {
            out["error"] = json!({
                "code": s.code,
                "message": s.message,
                "reason": s.reason,
                "domain": s.domain,
                "details": s.details.iter().map(|(k, v)| (k.clone(), tagged(v))).collect::<serde_json::Map<_, _>>(),
                "field_violations": s.field_violations.iter().map(|v| json!({
                    "field": v.field, "code": v.code, "reason": v.reason, "description": v.description,
                })).collect::<Vec<_>>(),
                "correlation_id": s.correlation_id,
            })
        }
    }
    out
}

pub(crate) fn golden_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1")
}

/// Compares `bytes` with the committed file, or writes it when `FLEXT_BLESS=1`.
pub(crate) fn check_golden(name: &str, bytes: &[u8]) {
    let path = golden_dir().join(name);
    if std::env::var("FLEXT_BLESS").as_deref() == Ok("1") {
        std::fs::write(&path, bytes).expect("write golden");
        return;
    }
    let committed = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (FLEXT_BLESS=1 writes it)", path.display()));
    assert!(
        committed == bytes,
        "{name}: the encoded bytes differ from the committed golden file: the v1 contract \
         changed. If that is intended, it is a new contract version."
    );
}
