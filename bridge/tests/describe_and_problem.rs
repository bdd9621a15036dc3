//! Type descriptors (JSON Schema, foreign types, validation with paths) and RFC 9457
//! problem details.

use std::collections::BTreeMap;

use flext_bridge::{Describe, Language, TypeDescriptor, problem_details};
use flext_domain::{CorrelationId, Error, ErrorCode, FieldViolation};
use serde_json::json;

struct Line;
impl Describe for Line {
    fn describe() -> TypeDescriptor {
        TypeDescriptor::structure("Line")
            .field::<String>("sku")
            .field::<u16>("quantity")
            .field::<i64>("amount")
            .field::<Option<String>>("memo")
    }
}

struct Order;
impl Describe for Order {
    fn describe() -> TypeDescriptor {
        TypeDescriptor::structure("Order")
            .field::<u64>("position")
            .field::<Vec<Line>>("items")
            .field::<BTreeMap<String, f64>>("rates")
            .field_of(
                "status",
                TypeDescriptor::enumeration("Status", ["open", "paid"]),
            )
            .field::<flext_bridge::Bytes>("signature")
    }
}

#[test]
fn json_schema_names_types_ranges_and_required_fields() {
    let s = Order::describe().json_schema();
    assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(s["title"], "Order");
    assert_eq!(
        s["required"],
        json!(["position", "items", "rates", "status", "signature"])
    );
    assert_eq!(
        s["properties"]["position"],
        json!({"type": "integer", "format": "uint64", "minimum": 0, "maximum": 18446744073709551615u64})
    );
    let line = &s["properties"]["items"]["items"];
    assert_eq!(line["required"], json!(["sku", "quantity", "amount"]));
    assert_eq!(
        line["properties"]["memo"]["anyOf"][1],
        json!({"type": "null"})
    );
    assert_eq!(
        s["properties"]["rates"]["additionalProperties"]["format"],
        "double"
    );
    assert_eq!(s["properties"]["status"]["enum"], json!(["open", "paid"]));
    assert_eq!(s["properties"]["signature"]["contentEncoding"], "base64");
}

#[test]
fn foreign_types_follow_the_table() {
    let d = Order::describe();
    let TypeDescriptor::Struct { fields, .. } = &d else {
        panic!("a struct")
    };
    let of = |name: &str, lang| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.foreign_type(lang))
            .expect("field")
    };
    assert_eq!(of("position", Language::Go), "uint64");
    assert_eq!(of("position", Language::Python), "int");
    assert_eq!(of("position", Language::TypeScript), "bigint");
    assert_eq!(of("items", Language::Go), "[]Line");
    assert_eq!(of("items", Language::TypeScript), "Line[]");
    assert_eq!(of("rates", Language::Python), "dict[str, float]");
    assert_eq!(of("status", Language::TypeScript), "\"open\" | \"paid\"");
    assert_eq!(of("signature", Language::TypeScript), "Uint8Array");
    assert_eq!(
        Option::<i32>::describe().foreign_type(Language::Go),
        "*int32"
    );
}

#[test]
fn validation_reports_every_mismatch_with_its_path() {
    let sent = json!({
        "position": -1,
        "items": [
            {"sku": "a", "quantity": 1, "amount": 5},
            {"sku": "b", "quantity": 70000, "amount": "2", "memo": null},
            {"quantity": 1, "amount": 1, "memo": 3}
        ],
        "rates": {"eur": 1.0, "usd": "x"},
        "status": "lost",
    });
    let err = Order::describe().validate_json(&sent).unwrap_err();
    assert_eq!(
        (err.code(), err.reason()),
        (ErrorCode::InvalidArgument, "TYPE_MISMATCH")
    );
    let got: Vec<(String, String)> = err
        .field_violations()
        .iter()
        .map(|v| (v.field.clone(), v.description.clone()))
        .collect();
    let want = [
        (
            "$.position",
            "expected integer in 0..=18446744073709551615, found -1",
        ),
        (
            "$.items[1].quantity",
            "expected integer in 0..=65535, found 70000",
        ),
        ("$.items[1].amount", "expected integer, found string"),
        ("$.items[2].sku", "required, missing"),
        ("$.items[2].memo", "expected string, found integer"),
        ("$.rates[\"usd\"]", "expected number, found string"),
        (
            "$.status",
            "expected one of [\"open\", \"paid\"], found \"lost\"",
        ),
        ("$.signature", "required, missing"),
    ];
    assert_eq!(got, want.map(|(a, b)| (a.to_owned(), b.to_owned())));
    // A value that fits validates.
    let fine = json!({"position": 5, "items": [], "rates": {}, "status": "paid"});
    let mut fine = flext_bridge::Value::from_json(&fine);
    if let flext_bridge::Value::Map(m) = &mut fine {
        m.insert("signature".into(), flext_bridge::Value::Bytes(vec![1, 2]));
    }
    Order::describe().validate(&fine).expect("valid");
}

#[test]
fn problem_details_follow_rfc_9457_and_redact() {
    let e = Error::invalid_argument("INVALID_COMMAND", "the command is invalid")
        .with_field_violation(FieldViolation::new(
            "amount",
            ErrorCode::InvalidArgument,
            "NOT_POSITIVE",
            "must be > 0",
        ))
        .with_detail("api_key", "s3cr3t")
        .with_correlation_id(CorrelationId::new())
        .with_source(std::io::Error::other("socket closed"));
    let p = problem_details(&e, "https://errors.example.com/", Some("/accounts/7"));
    assert_eq!(p["type"], "https://errors.example.com/invalid-command");
    assert_eq!(p["title"], "Invalid command");
    assert_eq!(p["status"], 400);
    assert_eq!(p["detail"], "the command is invalid");
    assert_eq!(p["instance"], "/accounts/7");
    assert_eq!(p["code"], "INVALID_ARGUMENT");
    assert_eq!(
        p["errors"],
        json!([{"field": "amount", "reason": "NOT_POSITIVE", "detail": "must be > 0"}])
    );
    assert_eq!(p["details"]["api_key"], "[REDACTED]");
    assert_eq!(
        p["correlation_id"],
        e.correlation_id()
            .map(|c| c.to_string())
            .unwrap_or_default()
    );
    let text = p.to_string();
    assert!(
        !text.contains("s3cr3t") && !text.contains("socket closed"),
        "{text}"
    );
    let unavailable = problem_details(
        &Error::unavailable("STORE_UNAVAILABLE", "down"),
        "urn:x",
        None,
    );
    assert_eq!(unavailable["status"], 503);
    assert!(unavailable.get("instance").is_none());
}

/// JSON is validated the way the descriptor's JSON Schema reads it: bytes are a base64
/// string, and an integer may be written with a zero fraction (`1.0`).
#[test]
fn json_validation_agrees_with_the_json_schema() {
    let d = Order::describe();
    let good = json!({
        "position": 7.0,
        "items": [{"sku": "a", "quantity": 2.0, "amount": -5}],
        "rates": {"eur": 1.5},
        "status": "open",
        "signature": "aGVsbG8="
    });
    d.validate_json(&good)
        .expect("base64 bytes and integer-valued numbers are valid");
    let bad = json!({
        "position": 7.5,
        "items": [{"sku": "a", "quantity": 2.0, "amount": 1}],
        "rates": {},
        "status": "open",
        "signature": "not base64!"
    });
    let e = d
        .validate_json(&bad)
        .expect_err("a fraction and bad base64");
    let fields: Vec<&str> = e
        .field_violations()
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(fields, ["$.position", "$.signature"], "{e}");
}

/// What `Value::to_json` writes is what the JSON Schema and `validate_json` accept: bytes
/// as a base64 string, not an array of numbers.
#[test]
fn to_json_writes_what_validate_json_accepts() {
    let mut m = BTreeMap::new();
    m.insert("position".to_owned(), flext_bridge::Value::from(7u64));
    m.insert("items".to_owned(), flext_bridge::Value::List(Vec::new()));
    m.insert(
        "rates".to_owned(),
        flext_bridge::Value::Map(BTreeMap::new()),
    );
    m.insert("status".to_owned(), flext_bridge::Value::from("open"));
    m.insert(
        "signature".to_owned(),
        flext_bridge::Value::Bytes(b"hello".to_vec()),
    );
    let v = flext_bridge::Value::Map(m);
    let j = v.to_json();
    assert_eq!(j["signature"], "aGVsbG8=");
    Order::describe()
        .validate_json(&j)
        .expect("to_json's output is valid JSON for the schema");
    assert_eq!(flext_bridge::Value::Bytes(Vec::new()).to_json(), "");
    assert_eq!(
        flext_bridge::Value::Bytes(vec![0xfb, 0xff]).to_json(),
        "+/8="
    );
}

#[derive(Debug, PartialEq, serde::Deserialize)]
enum Shape {
    Dot,
    Circle(u32),
    Pair(i8, i8),
    Rect { w: u16, h: u16 },
}

#[derive(Debug, PartialEq, serde::Deserialize)]
struct Blob {
    plain: Vec<u8>,
    #[serde(with = "serde_bytes")]
    wrapped: Vec<u8>,
    shapes: Vec<Shape>,
    note: Option<String>,
    missing: Option<u64>,
    big: u64,
}

/// `Value::deserialize_into` reads bytes as bytes (a plain `Vec<u8>` and a `serde_bytes`
/// field alike), enums as serde writes them, and options; a mismatch names the problem.
#[test]
fn deserialize_into_reads_bytes_enums_and_options() {
    use flext_bridge::Value;
    let shapes = vec![
        Value::from("Dot"),
        Value::Map(BTreeMap::from([("Circle".to_owned(), Value::from(3i64))])),
        Value::Map(BTreeMap::from([(
            "Pair".to_owned(),
            Value::List(vec![Value::from(-1i64), Value::from(2i64)]),
        )])),
        Value::Map(BTreeMap::from([(
            "Rect".to_owned(),
            Value::Map(BTreeMap::from([
                ("w".to_owned(), Value::from(4i64)),
                ("h".to_owned(), Value::from(5i64)),
            ])),
        )])),
    ];
    let v = Value::Map(BTreeMap::from([
        ("plain".to_owned(), Value::Bytes(vec![1, 2, 255])),
        ("wrapped".to_owned(), Value::Bytes(vec![9, 8])),
        ("shapes".to_owned(), Value::List(shapes)),
        ("note".to_owned(), Value::from("hi")),
        ("missing".to_owned(), Value::Null),
        ("big".to_owned(), Value::from(u64::MAX)),
    ]));
    let b: Blob = v.deserialize_into().expect("fits");
    assert_eq!(
        b,
        Blob {
            plain: vec![1, 2, 255],
            wrapped: vec![9, 8],
            shapes: vec![
                Shape::Dot,
                Shape::Circle(3),
                Shape::Pair(-1, 2),
                Shape::Rect { w: 4, h: 5 }
            ],
            note: Some("hi".into()),
            missing: None,
            big: u64::MAX,
        }
    );
    // A list of small integers still reads as bytes, as before.
    let listed: Vec<u8> = Value::List(vec![Value::from(7i64)])
        .deserialize_into()
        .expect("a list of bytes");
    assert_eq!(listed, [7]);
    let e = Value::from(300i64)
        .deserialize_into::<u8>()
        .expect_err("out of range");
    assert_eq!(e.reason(), "VALUE_MISMATCH");
    assert!(e.message().contains("300"), "{e}");
    let e = Value::from("Hexagon")
        .deserialize_into::<Shape>()
        .expect_err("unknown variant");
    assert!(e.message().contains("Hexagon"), "{e}");
    let e = Value::List(vec![
        Value::from(1i64),
        Value::from(2i64),
        Value::from(3i64),
    ])
    .deserialize_into::<(u8, u8)>()
    .expect_err("too long");
    assert!(e.message().contains("3"), "{e}");
}
