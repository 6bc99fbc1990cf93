//! Compile-time errors of `#[task]`: each is spanned at the offending token.
//! Regenerate the expected output with `TRYBUILD=overwrite cargo test --test ui`
//! and read every `.stderr` before committing it.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
