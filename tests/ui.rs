//! Compile-time errors of `#[task]`: each is spanned at the offending token.
//! Regenerate the expected output with `TRYBUILD=overwrite cargo test --test ui`
//! and read every `.stderr` before committing it.

// The macro's errors do not depend on features; the local-only run of the
// suite checks them, and the distributed run does not rebuild every
// dependency a second time for trybuild.
#[test]
#[cfg_attr(
    feature = "distributed",
    ignore = "checked by the local-only run of ./scripts/test"
)]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
