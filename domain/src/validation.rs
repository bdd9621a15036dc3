//! `Validation`: check every field, keep every error with its code and field path.

use std::borrow::Cow;

use crate::error::{Error, ErrorCode, FieldViolation};

/// An accumulating validation: unlike `?`, it goes on after the first failure and keeps
/// every violation, in order, each with its own [`ErrorCode`], reason and field path.
///
/// Paths are joined with `.` (`owner.email`) and indexes with brackets (`items[2].amount`),
/// so a nested validation reports the full path of every field.
///
/// ```
/// use flext::{Error, ErrorCode, Validation};
///
/// let mut v = Validation::new();
/// v.ensure(false, "owner", "REQUIRED", "must not be empty");
/// let amount = v.check("amount", Err::<i64, _>(Error::out_of_range("NEGATIVE", "must be >= 0")));
/// assert!(amount.is_none());
///
/// let err = v.finish().unwrap_err();
/// assert_eq!(err.code(), ErrorCode::InvalidArgument);
/// let fields: Vec<_> = err.field_violations().iter().map(|f| (f.field.as_str(), f.code)).collect();
/// assert_eq!(fields, [("owner", ErrorCode::InvalidArgument), ("amount", ErrorCode::OutOfRange)]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validation {
    violations: Vec<FieldViolation>,
}

/// Joins a field path prefix and a child path: `owner` + `email` is `owner.email`,
/// `items` + `[2]` is `items[2]`, and an empty side leaves the other unchanged.
pub fn join_field_path(prefix: &str, child: &str) -> String {
    match (prefix.is_empty(), child.is_empty()) {
        (true, _) => child.to_owned(),
        (false, true) => prefix.to_owned(),
        (false, false) if child.starts_with('[') => format!("{prefix}{child}"),
        (false, false) => format!("{prefix}.{child}"),
    }
}

impl Validation {
    /// An empty validation.
    pub fn new() -> Self {
        Validation::default()
    }

    /// Records the error of `result` under `field` and returns `None`, or returns the value.
    ///
    /// An error that already carries field violations (a value object validated its own
    /// parts) contributes each of them with `field` prefixed to its path; any other error
    /// contributes one violation with its code, reason and message.
    pub fn check<T>(&mut self, field: &str, result: Result<T, Error>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.push_error(field, e);
                None
            }
        }
    }

    /// Records an `InvalidArgument` violation of `field` unless `condition` holds.
    pub fn ensure(
        &mut self,
        condition: bool,
        field: &str,
        reason: impl Into<Cow<'static, str>>,
        description: impl Into<String>,
    ) -> &mut Self {
        self.ensure_code(
            condition,
            field,
            ErrorCode::InvalidArgument,
            reason,
            description,
        )
    }

    /// Records a violation of `field` with the given code unless `condition` holds.
    pub fn ensure_code(
        &mut self,
        condition: bool,
        field: &str,
        code: ErrorCode,
        reason: impl Into<Cow<'static, str>>,
        description: impl Into<String>,
    ) -> &mut Self {
        if !condition {
            self.violations
                .push(FieldViolation::new(field, code, reason, description));
        }
        self
    }

    /// Records a violation as it is.
    pub fn push(&mut self, violation: FieldViolation) -> &mut Self {
        self.violations.push(violation);
        self
    }

    /// Records an error under `field` (see [`Validation::check`]).
    pub fn push_error(&mut self, field: &str, error: Error) -> &mut Self {
        if error.field_violations().is_empty() {
            self.violations.push(FieldViolation::new(
                field,
                error.code(),
                error.reason().to_owned(),
                error.message().to_owned(),
            ));
        } else {
            self.violations
                .extend(error.field_violations().iter().map(|v| FieldViolation {
                    field: join_field_path(field, &v.field),
                    ..v.clone()
                }));
        }
        self
    }

    /// Takes every violation of a nested validation, prefixing `prefix` to their paths.
    pub fn nested(&mut self, prefix: &str, inner: Validation) -> &mut Self {
        self.violations
            .extend(inner.violations.into_iter().map(|v| FieldViolation {
                field: join_field_path(prefix, &v.field),
                ..v
            }));
        self
    }

    /// Whether no violation was recorded.
    pub fn is_valid(&self) -> bool {
        self.violations.is_empty()
    }

    /// The violations so far, in the order recorded.
    pub fn violations(&self) -> &[FieldViolation] {
        &self.violations
    }

    /// `Ok(())` if nothing was recorded, else one error holding every violation in order.
    ///
    /// The error's code is the violations' common code when they all share one, otherwise
    /// `InvalidArgument`; its reason is `VALIDATION_FAILED`.
    pub fn finish(self) -> Result<(), Error> {
        let Some(first) = self.violations.first() else {
            return Ok(());
        };
        let code = if self.violations.iter().all(|v| v.code == first.code) {
            first.code
        } else {
            ErrorCode::InvalidArgument
        };
        let fields: Vec<&str> = self.violations.iter().map(|v| v.field.as_str()).collect();
        let message = format!(
            "{} invalid field(s): {}",
            self.violations.len(),
            fields.join(", ")
        );
        Err(Error::new(code, "VALIDATION_FAILED", message).with_field_violations(self.violations))
    }

    /// Like [`Validation::finish`], building the value only when everything was valid.
    pub fn finish_with<T>(self, value: impl FnOnce() -> T) -> Result<T, Error> {
        self.finish().map(|()| value())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    struct Check {
        field: String,
        code: ErrorCode,
        reason: String,
        fails: bool,
    }

    fn arb_check() -> impl Strategy<Value = Check> {
        (
            "[a-z]{1,8}(\\[[0-9]\\])?",
            prop::sample::select(ErrorCode::ALL.to_vec()),
            "[A-Z_]{1,10}",
            any::<bool>(),
        )
            .prop_map(|(field, code, reason, fails)| Check {
                field,
                code,
                reason,
                fails,
            })
    }

    proptest! {
        #[test]
        fn keeps_every_error_and_code_in_order(checks in prop::collection::vec(arb_check(), 0..30)) {
            let mut v = Validation::new();
            for c in &checks {
                let r: Result<u8, Error> = if c.fails {
                    Err(Error::new(c.code, c.reason.clone(), "bad"))
                } else {
                    Ok(1)
                };
                v.check(&c.field, r);
            }
            let failing: Vec<&Check> = checks.iter().filter(|c| c.fails).collect();
            match v.finish() {
                Ok(()) => prop_assert!(failing.is_empty()),
                Err(e) => {
                    let got: Vec<(&str, ErrorCode, &str)> = e
                        .field_violations()
                        .iter()
                        .map(|f| (f.field.as_str(), f.code, f.reason.as_ref()))
                        .collect();
                    let want: Vec<(&str, ErrorCode, &str)> = failing
                        .iter()
                        .map(|c| (c.field.as_str(), c.code, c.reason.as_str()))
                        .collect();
                    prop_assert_eq!(got, want);
                    let all_same = failing.iter().all(|c| c.code == failing[0].code);
                    let expected = if all_same { failing[0].code } else { ErrorCode::InvalidArgument };
                    prop_assert_eq!(e.code(), expected);
                }
            }
        }

        #[test]
        fn nesting_prefixes_paths_and_keeps_order(
            inner in prop::collection::vec(arb_check(), 0..10),
            prefix in "[a-z]{1,6}",
        ) {
            let mut nested = Validation::new();
            for c in inner.iter().filter(|c| c.fails) {
                nested.ensure_code(false, &c.field, c.code, c.reason.clone(), "bad");
            }
            let mut outer = Validation::new();
            outer.nested(&prefix, nested.clone());
            prop_assert_eq!(outer.violations().len(), nested.violations().len());
            for (o, n) in outer.violations().iter().zip(nested.violations()) {
                prop_assert_eq!(&o.field, &join_field_path(&prefix, &n.field));
                prop_assert_eq!(o.code, n.code);
            }
        }
    }

    #[test]
    fn paths_join_with_dots_and_brackets() {
        assert_eq!(join_field_path("owner", "email"), "owner.email");
        assert_eq!(join_field_path("items", "[2]"), "items[2]");
        assert_eq!(join_field_path("items[2]", "amount"), "items[2].amount");
        assert_eq!(join_field_path("", "amount"), "amount");
        assert_eq!(join_field_path("owner", ""), "owner");
    }

    #[test]
    fn an_error_with_violations_contributes_each_with_the_prefix() {
        let inner = Error::invalid_argument("BAD_ADDRESS", "bad")
            .with_field_violation(FieldViolation::new(
                "zip",
                ErrorCode::InvalidArgument,
                "FORMAT",
                "5 digits",
            ))
            .with_field_violation(FieldViolation::new(
                "city",
                ErrorCode::InvalidArgument,
                "REQUIRED",
                "required",
            ));
        let mut v = Validation::new();
        v.check::<()>("address", Err(inner));
        let fields: Vec<&str> = v.violations().iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["address.zip", "address.city"]);
    }
}
