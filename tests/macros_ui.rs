//! Compile-time checks of the macros: what compiles, and the spanned errors with hints
//! that misuse produces.
#![cfg(feature = "macros")]

#[test]
fn macros_accept_good_code_and_explain_bad_code() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
