//! A sensitive detail's value never shows in `Display`, `Debug` or serialized output.

use flext_domain::{Error, ErrorCode, FieldViolation, REDACTED};
use proptest::prelude::*;
use serde_json::json;

const SECRET: &str = "hunter2-sk-live-0123456789";

fn every_rendering(err: &Error) -> Vec<String> {
    vec![
        err.to_string(),
        format!("{err:?}"),
        format!("{err:#?}"),
        serde_json::to_string(err).expect("serialize"),
        serde_json::to_string_pretty(err).expect("serialize"),
        err.details().values().map(|v| v.to_string()).collect(),
    ]
}

#[test]
fn sensitive_values_are_redacted_at_any_depth() {
    let err = Error::permission_denied("BAD_LOGIN", "login refused")
        .with_detail("password", SECRET)
        .with_detail("Authorization", format!("Bearer {SECRET}"))
        .with_detail(
            "request",
            json!({
                "user": "ada",
                "headers": { "X-Api-Key": SECRET, "accept": "json" },
                "attempts": [ { "otp_token": SECRET }, { "client_secret": [SECRET] } ],
            }),
        )
        .with_field_violation(FieldViolation::new(
            "password",
            ErrorCode::InvalidArgument,
            "TOO_SHORT",
            "must be at least 12 characters",
        ));
    for rendering in every_rendering(&err) {
        assert!(!rendering.contains(SECRET), "leaked in: {rendering}");
        assert!(!rendering.contains("hunter2"), "leaked in: {rendering}");
    }
    assert_eq!(err.detail("password"), Some(&json!(REDACTED)));
    let request = err.detail("request").expect("request detail");
    assert_eq!(request["user"], json!("ada"));
    assert_eq!(request["headers"]["accept"], json!("json"));
    assert_eq!(request["headers"]["X-Api-Key"], json!(REDACTED));
    assert_eq!(request["attempts"][1]["client_secret"], json!(REDACTED));
}

#[test]
fn deserializing_redacts_too() {
    let text = format!(
        r#"{{"code":"INTERNAL","reason":"R","message":"m","details":{{"db":{{"password":"{SECRET}"}}}}}}"#
    );
    let err: Error = serde_json::from_str(&text).expect("deserialize");
    for rendering in every_rendering(&err) {
        assert!(!rendering.contains(SECRET), "leaked in: {rendering}");
    }
}

#[test]
fn context_added_through_result_ext_is_redacted() {
    use flext_domain::ResultExt;
    let r: Result<(), Error> = Err(Error::unauthenticated("NO_SESSION", "log in"));
    let err = r.with_context("session_id", SECRET).unwrap_err();
    for rendering in every_rendering(&err) {
        assert!(!rendering.contains(SECRET), "leaked in: {rendering}");
    }
}

fn sensitive_key() -> impl Strategy<Value = String> {
    (
        "[a-z]{0,4}[_.-]?",
        prop::sample::select(vec![
            "password",
            "Secret",
            "TOKEN",
            "api_key",
            "apiKey",
            "authorization",
            "Cookie",
        ]),
        "[_-]?[a-z]{0,4}",
    )
        .prop_map(|(a, b, c)| format!("{a}{b}{c}"))
}

proptest! {
    #[test]
    fn a_secret_under_a_sensitive_key_never_leaks(
        key in sensitive_key(),
        outer in prop::collection::vec("[a-z]{1,6}", 0..4),
        secret in "[A-Za-z0-9]{16,24}",
    ) {
        // Nest the sensitive key under zero or more ordinary object keys.
        let mut value = json!({ key.clone(): secret.clone() });
        for k in outer.iter().rev() {
            value = json!({ k.clone(): value });
        }
        let err = Error::internal("X", "x").with_detail("context", value);
        for rendering in every_rendering(&err) {
            prop_assert!(!rendering.contains(&secret), "leaked in: {}", rendering);
        }
    }
}
