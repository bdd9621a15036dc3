//! RFC 9457 problem details: an error as `application/problem+json` for HTTP services.

use flext_domain::Error;
use serde_json::{Map, Value, json};

/// The media type of [`problem_details`]' output.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The problem-details object of `error` (RFC 9457):
///
/// - `type`: `{type_base}/{reason in kebab case}` (`INSUFFICIENT_FUNDS` ->
///   `https://errors.example.com/insufficient-funds`), a stable URI per cause;
/// - `title`: the reason in words; `status`: the HTTP status of the code
///   (`ErrorCode::http_status`); `detail`: the message; `instance`: when given;
/// - extension members: `code` (the code's name), `reason`, `correlation_id`, `errors`
///   (field violations: `field`, `reason`, `detail`) and `details` (sensitive keys are
///   already redacted). Never a source chain or a type name.
///
/// ```
/// use flext::bridge::problem_details;
/// use flext::Error;
///
/// let e = Error::failed_precondition("INSUFFICIENT_FUNDS", "the balance is 10, 30 asked")
///     .with_detail("balance", 10);
/// let p = problem_details(&e, "https://errors.example.com", None);
/// assert_eq!(p["type"], "https://errors.example.com/insufficient-funds");
/// assert_eq!(p["status"], 400);
/// assert_eq!(p["title"], "Insufficient funds");
/// assert_eq!(p["details"]["balance"], 10);
/// ```
pub fn problem_details(error: &Error, type_base: &str, instance: Option<&str>) -> Value {
    let reason = error.reason();
    let slug: String = reason
        .chars()
        .map(|c| {
            if c == '_' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    let mut title: String = reason.replace('_', " ").to_lowercase();
    if let Some(first) = title.get(..1) {
        title = first.to_uppercase() + &title[1..];
    }
    let mut p = Map::new();
    p.insert(
        "type".into(),
        json!(format!("{}/{slug}", type_base.trim_end_matches('/'))),
    );
    p.insert("title".into(), json!(title));
    p.insert("status".into(), json!(error.code().http_status()));
    p.insert("detail".into(), json!(error.message()));
    if let Some(i) = instance {
        p.insert("instance".into(), json!(i));
    }
    p.insert("code".into(), json!(error.code().as_str()));
    p.insert("reason".into(), json!(reason));
    if let Some(c) = error.correlation_id() {
        p.insert("correlation_id".into(), json!(c.to_string()));
    }
    if !error.field_violations().is_empty() {
        let errors: Vec<Value> = error
            .field_violations()
            .iter()
            .map(|v| json!({"field": v.field, "reason": v.reason, "detail": v.description}))
            .collect();
        p.insert("errors".into(), Value::Array(errors));
    }
    if !error.details().is_empty() {
        p.insert(
            "details".into(),
            Value::Object(error.details().clone().into_iter().collect()),
        );
    }
    Value::Object(p)
}
