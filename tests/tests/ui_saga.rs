//! Compile tests for `#[saga]`: `ui/saga/pass` must compile (and run), `ui/saga/fail` must fail
//! with the checked-in `.stderr`. After a deliberate change, regenerate them with
//! `TRYBUILD=overwrite cargo test -p eventdriven-tests --test ui_saga` and review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/saga/pass/*.rs");
    t.compile_fail("ui/saga/fail/*.rs");
}
