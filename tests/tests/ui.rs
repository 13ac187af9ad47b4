//! Compile errors of `#[rpc]` and `#[subscribe]`, pinned: each points at the offending token.

#[test]
fn unsupported_signatures_are_compile_errors() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui/*.rs");
}
