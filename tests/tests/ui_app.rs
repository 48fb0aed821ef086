//! Compile tests for the `App` API: `send`, `publish` and `query` with the wrong kind of message: `ui/app/pass` must compile, `ui/app/fail` must fail with the
//! checked-in `.stderr`. After a deliberate change to a message, regenerate them with
//! `TRYBUILD=overwrite cargo test -p eventdriven-tests --test ui_app` and review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/app/pass/*.rs");
    t.compile_fail("ui/app/fail/*.rs");
}
