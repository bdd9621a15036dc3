//! Type descriptors: a payload type describes its shape, which is exported as JSON Schema
//! for other languages and used to validate values they send, with a path to what is
//! wrong (`$.items[2].amount: expected integer, found string`).
//!
//! How each described type reads in other languages:
//!
//! | descriptor | Rust | Go | Python | TypeScript |
//! |---|---|---|---|---|
//! | `Bool` | `bool` | `bool` | `bool` | `boolean` |
//! | `Int { bits: 8..32 }` | `i8`..`i32`, `u8`..`u32` | `int8`..`int32`, `uint8`..`uint32` | `int` | `number` |
//! | `Int { bits: 64 }` | `i64`, `u64` | `int64`, `uint64` | `int` | `bigint` (MessagePack with `useBigInt64`; Protobuf `jstype = JS_STRING` gives `string`) |
//! | `Float` | `f32`, `f64` | `float32`, `float64` | `float` | `number` |
//! | `String` | `String` | `string` | `str` | `string` |
//! | `Bytes` | [`Bytes`] | `[]byte` | `bytes` | `Uint8Array` |
//! | `Optional(T)` | `Option<T>` | `*T` | `Optional[T]` | `T \| null` |
//! | `List(T)` | `Vec<T>` | `[]T` | `list[T]` | `T[]` |
//! | `Map(T)` | `BTreeMap<String, T>` | `map[string]T` | `dict[str, T]` | `Record<string, T>` |
//! | `Struct` | a struct | a struct | a `TypedDict`/dataclass | an interface |
//! | `Enum` | a unit-only enum | `string` constants | `Literal[...]` | a union of string literals |
//!
//! [`TypeDescriptor::foreign_type`] gives the same mapping as text.

use std::collections::{BTreeMap, HashMap};

use flext_domain::{Error, ErrorCode, FieldViolation};
use serde_json::{Map, json};

use crate::wire::Value;

/// Bytes, described as [`TypeDescriptor::Bytes`] (a `Vec<u8>` is a list of integers).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bytes(pub Vec<u8>);

/// The shape of a payload type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeDescriptor {
    /// `true` or `false`.
    Bool,
    /// An integer of `bits` bits.
    Int {
        /// 8, 16, 32 or 64.
        bits: u8,
        /// Whether negative values are allowed.
        signed: bool,
    },
    /// A float of `bits` bits.
    Float {
        /// 32 or 64.
        bits: u8,
    },
    /// UTF-8 text.
    String,
    /// Raw bytes.
    Bytes,
    /// The value or null.
    Optional(Box<TypeDescriptor>),
    /// A list.
    List(Box<TypeDescriptor>),
    /// A map with string keys.
    Map(Box<TypeDescriptor>),
    /// Named fields.
    Struct {
        /// The type's name.
        name: String,
        /// The fields in order.
        fields: Vec<(String, TypeDescriptor)>,
    },
    /// One of a set of names.
    Enum {
        /// The type's name.
        name: String,
        /// The allowed names.
        variants: Vec<String>,
    },
}

/// A type that can describe its shape.
///
/// ```
/// use flext::bridge::{Describe, TypeDescriptor, Value};
///
/// struct Line { sku: String, amount: i64 }
/// impl Describe for Line {
///     fn describe() -> TypeDescriptor {
///         TypeDescriptor::structure("Line").field::<String>("sku").field::<i64>("amount")
///     }
/// }
/// struct Order { items: Vec<Line> }
/// impl Describe for Order {
///     fn describe() -> TypeDescriptor {
///         TypeDescriptor::structure("Order").field::<Vec<Line>>("items")
///     }
/// }
///
/// let sent = Value::from_json(&serde_json::json!(
///     {"items": [{"sku": "a", "amount": 1}, {"sku": "b", "amount": "2"}]}
/// ));
/// let err = Order::describe().validate(&sent).unwrap_err();
/// assert_eq!(err.field_violations()[0].field, "$.items[1].amount");
/// assert_eq!(err.field_violations()[0].description, "expected integer, found string");
/// ```
pub trait Describe {
    /// The type's shape.
    fn describe() -> TypeDescriptor;
}

macro_rules! describe_int {
    ($($t:ty => $bits:expr, $signed:expr);* $(;)?) => {
        $(impl Describe for $t {
            fn describe() -> TypeDescriptor {
                TypeDescriptor::Int { bits: $bits, signed: $signed }
            }
        })*
    };
}
describe_int!(i8 => 8, true; i16 => 16, true; i32 => 32, true; i64 => 64, true;
              u8 => 8, false; u16 => 16, false; u32 => 32, false; u64 => 64, false);

impl Describe for bool {
    fn describe() -> TypeDescriptor {
        TypeDescriptor::Bool
    }
}
impl Describe for f32 {
    fn describe() -> TypeDescriptor {
        TypeDescriptor::Float { bits: 32 }
    }
}
impl Describe for f64 {
    fn describe() -> TypeDescriptor {
        TypeDescriptor::Float { bits: 64 }
    }
}
impl Describe for String {
    fn describe() -> TypeDescriptor {
        TypeDescriptor::String
    }
}
impl Describe for Bytes {
    fn describe() -> TypeDescriptor {
        TypeDescriptor::Bytes
    }
}
impl<T: Describe> Describe for Option<T> {
    fn describe() -> TypeDescriptor {
        TypeDescriptor::Optional(Box::new(T::describe()))
    }
}
impl<T: Describe> Describe for Vec<T> {
    fn describe() -> TypeDescriptor {
        TypeDescriptor::List(Box::new(T::describe()))
    }
}
impl<T: Describe> Describe for BTreeMap<String, T> {
    fn describe() -> TypeDescriptor {
        TypeDescriptor::Map(Box::new(T::describe()))
    }
}
impl<T: Describe, S> Describe for HashMap<String, T, S> {
    fn describe() -> TypeDescriptor {
        TypeDescriptor::Map(Box::new(T::describe()))
    }
}

/// Another language, for [`TypeDescriptor::foreign_type`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// Go.
    Go,
    /// Python (type hints).
    Python,
    /// TypeScript.
    TypeScript,
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Int(_) | Value::UInt(_) => "integer",
        Value::Float(_) => "float",
        Value::String(_) => "string",
        Value::Bytes(_) => "bytes",
        Value::List(_) => "list",
        Value::Map(_) => "map",
    }
}

impl TypeDescriptor {
    /// A struct named `name` with no fields yet.
    pub fn structure(name: impl Into<String>) -> TypeDescriptor {
        TypeDescriptor::Struct {
            name: name.into(),
            fields: Vec::new(),
        }
    }

    /// A unit-only enum named `name`.
    pub fn enumeration<I: IntoIterator<Item = S>, S: Into<String>>(
        name: impl Into<String>,
        variants: I,
    ) -> TypeDescriptor {
        TypeDescriptor::Enum {
            name: name.into(),
            variants: variants.into_iter().map(Into::into).collect(),
        }
    }

    /// Adds a field of type `T` (on a struct; ignored on other shapes).
    #[must_use]
    pub fn field<T: Describe>(self, name: impl Into<String>) -> TypeDescriptor {
        self.field_of(name, T::describe())
    }

    /// Adds a field of shape `ty`.
    #[must_use]
    pub fn field_of(mut self, name: impl Into<String>, ty: TypeDescriptor) -> TypeDescriptor {
        if let TypeDescriptor::Struct { fields, .. } = &mut self {
            fields.push((name.into(), ty));
        }
        self
    }

    /// The type as JSON Schema (draft 2020-12). 64-bit integers carry `"format": "int64"`
    /// or `"uint64"` so generators pick exact types; bytes are strings with
    /// `"contentEncoding": "base64"` in JSON and `bin` in MessagePack.
    pub fn json_schema(&self) -> serde_json::Value {
        let mut s = self.schema_inner();
        if let serde_json::Value::Object(m) = &mut s {
            m.insert(
                "$schema".into(),
                json!("https://json-schema.org/draft/2020-12/schema"),
            );
        }
        s
    }

    fn schema_inner(&self) -> serde_json::Value {
        match self {
            TypeDescriptor::Bool => json!({"type": "boolean"}),
            TypeDescriptor::Int { bits, signed } => {
                let (min, max): (i128, i128) = if *signed {
                    (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
                } else {
                    (0, (1i128 << bits) - 1)
                };
                let format = format!("{}int{bits}", if *signed { "" } else { "u" });
                json!({"type": "integer", "format": format, "minimum": min, "maximum": max})
            }
            TypeDescriptor::Float { bits } => {
                json!({"type": "number", "format": if *bits == 32 { "float" } else { "double" }})
            }
            TypeDescriptor::String => json!({"type": "string"}),
            TypeDescriptor::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
            TypeDescriptor::Optional(t) => json!({"anyOf": [t.schema_inner(), {"type": "null"}]}),
            TypeDescriptor::List(t) => json!({"type": "array", "items": t.schema_inner()}),
            TypeDescriptor::Map(t) => {
                json!({"type": "object", "additionalProperties": t.schema_inner()})
            }
            TypeDescriptor::Struct { name, fields } => {
                let mut props = Map::new();
                let mut required = Vec::new();
                for (f, t) in fields {
                    props.insert(f.clone(), t.schema_inner());
                    if !matches!(t, TypeDescriptor::Optional(_)) {
                        required.push(json!(f));
                    }
                }
                json!({"title": name, "type": "object", "properties": props, "required": required})
            }
            TypeDescriptor::Enum { name, variants } => {
                json!({"title": name, "type": "string", "enum": variants})
            }
        }
    }

    /// How the type is written in `language` (see the module's table).
    pub fn foreign_type(&self, language: Language) -> String {
        use Language::{Go, Python, TypeScript};
        match (self, language) {
            (TypeDescriptor::Bool, Go) | (TypeDescriptor::Bool, Python) => "bool".into(),
            (TypeDescriptor::Bool, TypeScript) => "boolean".into(),
            (TypeDescriptor::Int { bits, signed }, Go) => {
                format!("{}int{bits}", if *signed { "" } else { "u" })
            }
            (TypeDescriptor::Int { .. }, Python) => "int".into(),
            (TypeDescriptor::Int { bits: 64, .. }, TypeScript) => "bigint".into(),
            (TypeDescriptor::Int { .. }, TypeScript) => "number".into(),
            (TypeDescriptor::Float { bits }, Go) => format!("float{bits}"),
            (TypeDescriptor::Float { .. }, Python) => "float".into(),
            (TypeDescriptor::Float { .. }, TypeScript) => "number".into(),
            (TypeDescriptor::String, Python) => "str".into(),
            (TypeDescriptor::String, _) => "string".into(),
            (TypeDescriptor::Bytes, Go) => "[]byte".into(),
            (TypeDescriptor::Bytes, Python) => "bytes".into(),
            (TypeDescriptor::Bytes, TypeScript) => "Uint8Array".into(),
            (TypeDescriptor::Optional(t), Go) => format!("*{}", t.foreign_type(Go)),
            (TypeDescriptor::Optional(t), Python) => {
                format!("Optional[{}]", t.foreign_type(Python))
            }
            (TypeDescriptor::Optional(t), TypeScript) => {
                format!("{} | null", t.foreign_type(TypeScript))
            }
            (TypeDescriptor::List(t), Go) => format!("[]{}", t.foreign_type(Go)),
            (TypeDescriptor::List(t), Python) => format!("list[{}]", t.foreign_type(Python)),
            (TypeDescriptor::List(t), TypeScript) => format!("{}[]", t.foreign_type(TypeScript)),
            (TypeDescriptor::Map(t), Go) => format!("map[string]{}", t.foreign_type(Go)),
            (TypeDescriptor::Map(t), Python) => format!("dict[str, {}]", t.foreign_type(Python)),
            (TypeDescriptor::Map(t), TypeScript) => {
                format!("Record<string, {}>", t.foreign_type(TypeScript))
            }
            (TypeDescriptor::Struct { name, .. }, _) => name.clone(),
            (TypeDescriptor::Enum { name, .. }, Go) => name.clone(),
            (TypeDescriptor::Enum { variants, .. }, Python) => format!(
                "Literal[{}]",
                variants
                    .iter()
                    .map(|v| format!("{v:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            (TypeDescriptor::Enum { variants, .. }, TypeScript) => variants
                .iter()
                .map(|v| format!("{v:?}"))
                .collect::<Vec<_>>()
                .join(" | "),
        }
    }

    /// Checks a value received from another language. Every mismatch is a field
    /// violation whose field is a path from `$` (`$.items[2].amount`) and whose
    /// description says what was expected and found; all are reported, in order, in one
    /// `InvalidArgument` error with reason `TYPE_MISMATCH`.
    pub fn validate(&self, value: &Value) -> Result<(), Error> {
        let mut problems = Vec::new();
        self.check(value, "$", &mut problems);
        if problems.is_empty() {
            return Ok(());
        }
        let violations = problems.into_iter().map(|(path, description)| {
            FieldViolation::new(
                path,
                ErrorCode::InvalidArgument,
                "TYPE_MISMATCH",
                description,
            )
        });
        Err(Error::invalid_argument(
            "TYPE_MISMATCH",
            "the value does not match the expected type",
        )
        .with_field_violations(violations))
    }

    /// [`TypeDescriptor::validate`] for a JSON value, read as the JSON Schema of this
    /// descriptor reads it: bytes are a base64 string, and an integer may be written as a
    /// number with no fractional part (`1.0`).
    pub fn validate_json(&self, value: &serde_json::Value) -> Result<(), Error> {
        self.validate(&self.read_json(value))
    }

    /// `value` as a [`Value`], guided by this descriptor where JSON and the descriptor
    /// spell a kind differently (base64 bytes, integer-valued numbers); otherwise as
    /// [`Value::from_json`] reads it, so a mismatch is still reported.
    fn read_json(&self, value: &serde_json::Value) -> Value {
        use serde_json::Value as J;
        match (self, value) {
            // Only the kind matters to validation: the bytes themselves are not decoded.
            (TypeDescriptor::Bytes, J::String(s)) if is_base64(s) => Value::Bytes(Vec::new()),
            (TypeDescriptor::Int { .. }, J::Number(n)) if n.is_f64() => match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64 => {
                    Value::Int(f as i64)
                }
                Some(f) if f.fract() == 0.0 && f >= 0.0 && f < u64::MAX as f64 => {
                    Value::UInt(f as u64)
                }
                _ => Value::from_json(value),
            },
            (TypeDescriptor::Optional(_), J::Null) => Value::Null,
            (TypeDescriptor::Optional(t), _) => t.read_json(value),
            (TypeDescriptor::List(t), J::Array(items)) => {
                Value::List(items.iter().map(|i| t.read_json(i)).collect())
            }
            (TypeDescriptor::Map(t), J::Object(m)) => {
                Value::Map(m.iter().map(|(k, v)| (k.clone(), t.read_json(v))).collect())
            }
            (TypeDescriptor::Struct { fields, .. }, J::Object(m)) => Value::Map(
                m.iter()
                    .map(|(k, v)| {
                        let read = match fields.iter().find(|(name, _)| name == k) {
                            Some((_, t)) => t.read_json(v),
                            None => Value::from_json(v),
                        };
                        (k.clone(), read)
                    })
                    .collect(),
            ),
            _ => Value::from_json(value),
        }
    }

    fn check(&self, v: &Value, path: &str, out: &mut Vec<(String, String)>) {
        let mut expected = |what: &str| {
            out.push((
                path.to_owned(),
                format!("expected {what}, found {}", kind(v)),
            ));
        };
        match (self, v) {
            (TypeDescriptor::Bool, Value::Bool(_)) => {}
            (TypeDescriptor::Int { bits, signed }, Value::Int(_) | Value::UInt(_)) => {
                let n: i128 = match v {
                    Value::Int(i) => i128::from(*i),
                    Value::UInt(u) => i128::from(*u),
                    _ => 0,
                };
                let (min, max): (i128, i128) = if *signed {
                    (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
                } else {
                    (0, (1i128 << bits) - 1)
                };
                if n < min || n > max {
                    out.push((
                        path.to_owned(),
                        format!("expected integer in {min}..={max}, found {n}"),
                    ));
                }
            }
            (TypeDescriptor::Float { .. }, Value::Float(_) | Value::Int(_) | Value::UInt(_)) => {}
            (TypeDescriptor::String, Value::String(_)) => {}
            (TypeDescriptor::Bytes, Value::Bytes(_)) => {}
            (TypeDescriptor::Optional(_), Value::Null) => {}
            (TypeDescriptor::Optional(t), _) => t.check(v, path, out),
            (TypeDescriptor::List(t), Value::List(items)) => {
                for (i, item) in items.iter().enumerate() {
                    t.check(item, &format!("{path}[{i}]"), out);
                }
            }
            (TypeDescriptor::Map(t), Value::Map(m)) => {
                for (k, item) in m {
                    t.check(item, &format!("{path}[{k:?}]"), out);
                }
            }
            (TypeDescriptor::Struct { fields, .. }, Value::Map(m)) => {
                for (name, t) in fields {
                    let p = format!("{path}.{name}");
                    match m.get(name) {
                        Some(item) => t.check(item, &p, out),
                        None if matches!(t, TypeDescriptor::Optional(_)) => {}
                        None => out.push((p, "required, missing".into())),
                    }
                }
            }
            (TypeDescriptor::Enum { variants, .. }, Value::String(s)) => {
                if !variants.iter().any(|x| x == s) {
                    out.push((
                        path.to_owned(),
                        format!("expected one of {variants:?}, found {s:?}"),
                    ));
                }
            }
            (TypeDescriptor::Bool, _) => expected("boolean"),
            (TypeDescriptor::Int { .. }, _) => expected("integer"),
            (TypeDescriptor::Float { .. }, _) => expected("number"),
            (TypeDescriptor::String, _) | (TypeDescriptor::Enum { .. }, _) => expected("string"),
            (TypeDescriptor::Bytes, _) => expected("bytes"),
            (TypeDescriptor::List(_), _) => expected("list"),
            (TypeDescriptor::Map(_), _) | (TypeDescriptor::Struct { .. }, _) => expected("map"),
        }
    }
}
/// Whether `s` is standard base64 (RFC 4648 alphabet, padded to a multiple of 4).
fn is_base64(s: &str) -> bool {
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return false;
    }
    let padding = bytes.iter().rev().take_while(|b| **b == b'=').count();
    padding <= 2
        && bytes[..bytes.len() - padding]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}
