//! Compile-time checks of the macros: what compiles, and the spanned errors with hints
//! that misuse produces.

#[test]
fn macros_accept_good_code_and_explain_bad_code() {
    let cases = trybuild::TestCases::new();
    cases.pass("ui/pass/*.rs");
    cases.compile_fail("ui/fail/*.rs");
}
