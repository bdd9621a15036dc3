//! Railway combinators that `Result` lacks: tap, recover by code, ensure, context, traverse.

use serde_json::Value;

use crate::error::{Error, ErrorCode};

/// What FLEXT's result type offers on top of Rust's `Result<T, Error>`.
///
/// `map`, `and_then`, `or_else`, `unwrap_or` and `?` are `Result`'s own; this trait adds the
/// rest. Every method is lazy on the path it does not take: `with_context` converts its key
/// and value only when there is an error.
///
/// ```
/// use flext::{Error, ErrorCode, ResultExt};
///
/// fn balance(account: &str) -> Result<i64, Error> {
///     Err(Error::not_found("ACCOUNT_NOT_FOUND", "no such account"))
/// }
///
/// let err = balance("acc-1")
///     .with_context("account", "acc-1")
///     .ensure(|b| *b >= 0, |b| Error::failed_precondition("NEGATIVE", format!("{b}")))
///     .unwrap_err();
/// assert_eq!(err.code(), ErrorCode::NotFound);
/// assert_eq!(err.detail("account").unwrap(), "acc-1");
///
/// let zero = balance("acc-1").recover(ErrorCode::NotFound, |_| 0);
/// assert_eq!(zero.unwrap(), 0);
/// ```
pub trait ResultExt<T>: Sized {
    /// Calls `f` with the value if there is one; returns `self` unchanged.
    fn tap(self, f: impl FnOnce(&T)) -> Self;

    /// Calls `f` with the error if there is one; returns `self` unchanged.
    fn tap_err(self, f: impl FnOnce(&Error)) -> Self;

    /// Turns an error with `code` into a value; errors with other codes pass through.
    fn recover(self, code: ErrorCode, f: impl FnOnce(Error) -> T) -> Self;

    /// Turns an error into a value when `pred` accepts it; others pass through.
    fn recover_if(self, pred: impl FnOnce(&Error) -> bool, f: impl FnOnce(Error) -> T) -> Self;

    /// Keeps the value if `pred` holds, otherwise fails with the error `err` builds.
    fn ensure(self, pred: impl FnOnce(&T) -> bool, err: impl FnOnce(&T) -> Error) -> Self;

    /// Adds a key/value detail to the error, keeping its code, reason and message.
    fn with_context<K, V>(self, key: K, value: V) -> Self
    where
        K: Into<String>,
        V: Into<Value>;

    /// Like [`ResultExt::with_context`], computing the detail only on error.
    fn with_context_lazy<K, V>(self, f: impl FnOnce() -> (K, V)) -> Self
    where
        K: Into<String>,
        V: Into<Value>;
}

impl<T> ResultExt<T> for Result<T, Error> {
    fn tap(self, f: impl FnOnce(&T)) -> Self {
        if let Ok(v) = &self {
            f(v);
        }
        self
    }

    fn tap_err(self, f: impl FnOnce(&Error)) -> Self {
        if let Err(e) = &self {
            f(e);
        }
        self
    }

    fn recover(self, code: ErrorCode, f: impl FnOnce(Error) -> T) -> Self {
        self.recover_if(|e| e.code() == code, f)
    }

    fn recover_if(self, pred: impl FnOnce(&Error) -> bool, f: impl FnOnce(Error) -> T) -> Self {
        match self {
            Err(e) if pred(&e) => Ok(f(e)),
            other => other,
        }
    }

    fn ensure(self, pred: impl FnOnce(&T) -> bool, err: impl FnOnce(&T) -> Error) -> Self {
        match self {
            Ok(v) if !pred(&v) => Err(err(&v)),
            other => other,
        }
    }

    fn with_context<K, V>(self, key: K, value: V) -> Self
    where
        K: Into<String>,
        V: Into<Value>,
    {
        self.map_err(|e| e.with_detail(key, value))
    }

    fn with_context_lazy<K, V>(self, f: impl FnOnce() -> (K, V)) -> Self
    where
        K: Into<String>,
        V: Into<Value>,
    {
        self.map_err(|e| {
            let (k, v) = f();
            e.with_detail(k, v)
        })
    }
}

/// Applies `f` to every item and collects the values, stopping at the first error
/// (fail-fast). The error gets an `index` detail naming the item that failed. To keep every
/// error instead, use [`crate::Validation`].
///
/// ```
/// use flext::{traverse, Error};
///
/// let parsed = traverse(["1", "2", "x"], |s| {
///     s.parse::<i32>().map_err(|e| Error::invalid_argument("NOT_A_NUMBER", e.to_string()))
/// });
/// assert_eq!(parsed.unwrap_err().detail("index").unwrap(), 2);
/// ```
pub fn traverse<I, U, F>(items: I, mut f: F) -> Result<Vec<U>, Error>
where
    I: IntoIterator,
    F: FnMut(I::Item) -> Result<U, Error>,
{
    let iter = items.into_iter();
    let mut out = Vec::with_capacity(iter.size_hint().0);
    for (index, item) in iter.enumerate() {
        out.push(f(item).map_err(|e| e.with_detail("index", index))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_code() -> impl Strategy<Value = ErrorCode> {
        prop::sample::select(ErrorCode::ALL.to_vec())
    }

    fn arb_result() -> impl Strategy<Value = Result<i64, Error>> {
        prop_oneof![
            any::<i64>().prop_map(Ok),
            (arb_code(), "[A-Z_]{1,12}").prop_map(|(c, r)| Err(Error::new(c, r, "m"))),
        ]
    }

    /// Compares results by value and by error code and reason.
    fn same(a: &Result<i64, Error>, b: &Result<i64, Error>) -> bool {
        match (a, b) {
            (Ok(x), Ok(y)) => x == y,
            (Err(x), Err(y)) => x.code() == y.code() && x.reason() == y.reason(),
            _ => false,
        }
    }

    proptest! {
        #[test]
        #[allow(clippy::map_identity)] // the law under test is exactly `map(|x| x)`
        fn map_identity(r in arb_result()) {
            let mapped = r.clone().map(|x| x);
            prop_assert!(same(&mapped, &r));
        }

        #[test]
        fn map_composition(r in arb_result(), a in -1000i64..1000, b in -1000i64..1000) {
            let f = |x: i64| x.wrapping_mul(a);
            let g = |x: i64| x.wrapping_add(b);
            let composed = r.clone().map(|x| g(f(x)));
            let chained = r.map(f).map(g);
            prop_assert!(same(&composed, &chained));
        }

        #[test]
        fn and_then_associativity(r in arb_result(), limit in any::<i64>(), code in arb_code()) {
            let f = move |x: i64| if x < limit { Ok(x.wrapping_add(1)) } else {
                Err(Error::new(code, "F", "f failed"))
            };
            let g = |x: i64| if x % 2 == 0 { Ok(x / 2) } else {
                Err(Error::invalid_argument("G", "odd"))
            };
            let left = r.clone().and_then(f).and_then(g);
            let right = r.and_then(|x| f(x).and_then(g));
            prop_assert!(same(&left, &right));
        }

        #[test]
        fn recover_touches_only_its_code(r in arb_result(), code in arb_code()) {
            let recovered = r.clone().recover(code, |_| 0);
            match &r {
                Err(e) if e.code() == code => prop_assert!(matches!(recovered, Ok(0))),
                _ => prop_assert!(same(&recovered, &r)),
            }
        }

        #[test]
        fn with_context_keeps_code_and_reason(r in arb_result(), v in any::<i64>()) {
            let ctx = r.clone().with_context("k", v);
            prop_assert!(same(&ctx, &r));
            if let Err(e) = ctx {
                prop_assert_eq!(e.detail("k"), Some(&Value::from(v)));
            }
        }

        #[test]
        fn traverse_equals_collect_and_names_first_failure(items in prop::collection::vec(-50i64..50, 0..40)) {
            let f = |x: i64| if x >= 0 { Ok(x) } else { Err(Error::invalid_argument("NEG", "negative")) };
            let t = traverse(items.iter().copied(), f);
            let c: Result<Vec<i64>, Error> = items.iter().copied().map(f).collect();
            match (t, c) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(a), Err(_)) => {
                    let first = items.iter().position(|x| *x < 0).expect("a negative item");
                    prop_assert_eq!(a.detail("index"), Some(&Value::from(first)));
                }
                _ => prop_assert!(false, "traverse and collect disagree"),
            }
        }
    }

    #[test]
    fn tap_and_tap_err_see_only_their_side() {
        let mut seen = Vec::new();
        let ok: Result<i64, Error> = Ok(1);
        let _ = ok.tap(|v| seen.push(*v)).tap_err(|_| seen.push(-1));
        let err: Result<i64, Error> = Err(Error::internal("X", "x"));
        let _ = err.tap(|v| seen.push(*v)).tap_err(|_| seen.push(-1));
        assert_eq!(seen, vec![1, -1]);
    }

    #[test]
    fn ensure_fails_with_the_given_error() {
        let r: Result<i64, Error> = Ok(5);
        let e = r
            .ensure(
                |v| *v > 10,
                |v| Error::out_of_range("TOO_SMALL", format!("{v} <= 10")),
            )
            .expect_err("must fail");
        assert_eq!(e.code(), ErrorCode::OutOfRange);
        assert_eq!(e.message(), "5 <= 10");
    }
}
