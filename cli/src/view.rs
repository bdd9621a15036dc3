//! How the command line shows what it read: JSON values (for `--json` and the tables
//! alike) and tables.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use comfy_table::{ContentArrangement, Table, presets};
use flext_domain::RecordedEvent;
use flext_ports::DeadLetter;
use serde_json::{Value, json};

/// A table with the house look: no borders, a header row, wrapped to the terminal.
pub(crate) fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().map(|h| h.to_uppercase()));
    t
}

/// A stored payload as JSON when it is JSON (flext's default codec), else as
/// `{"base64": ...}` so nothing is hidden or mangled.
pub(crate) fn payload(bytes: &[u8]) -> Value {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => v,
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) }),
    }
}

/// An event with its payload decoded and its metadata.
pub(crate) fn event(e: &RecordedEvent) -> Value {
    json!({
        "position": e.position.get(),
        "event_id": e.event_id.to_string(),
        "stream_id": e.stream_id.as_str(),
        "version": e.stream_version.0,
        "event_type": e.event_type,
        "schema_version": e.schema_version,
        "recorded_at": e.recorded_at.to_rfc3339(),
        "correlation_id": e.metadata.correlation_id.map(|c| c.to_string()),
        "causation_id": e.metadata.causation_id.map(|c| c.to_string()),
        "headers": e.metadata.headers,
        "payload": payload(&e.payload),
    })
}

/// A dead letter, without its event's payload.
pub(crate) fn dead_letter(l: &DeadLetter) -> Value {
    json!({
        "projection": l.projection,
        "event_id": l.event_id.to_string(),
        "position": l.position.get(),
        "stream_id": l.stream_id.as_str(),
        "version": l.stream_version.0,
        "event_type": l.event_type,
        "error": l.error,
        "attempts": l.attempts,
        "parked_at": l.parked_at.to_rfc3339(),
    })
}

/// A time as operators read it: RFC 3339 to the second.
pub(crate) fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Bytes as KiB, MiB or GiB.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A JSON value as one table cell: strings bare, `null` empty.
pub(crate) fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_that_are_not_json_are_shown_whole_as_base64() {
        assert_eq!(payload(br#"{"a":1}"#), json!({"a": 1}));
        assert_eq!(payload(&[0xff, 0x00]), json!({"base64": "/wA="}));
    }

    #[test]
    fn sizes_read_as_binary_units() {
        assert_eq!(bytes(12), "12 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
