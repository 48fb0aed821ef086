//! Compile tests for `#[derive(Command)]`, `#[derive(Event)]` and `#[derive(Query)]`: `ui/derive/pass` must compile, `ui/derive/fail` must fail with the
//! checked-in `.stderr`. After a deliberate change to a message, regenerate them with
//! `TRYBUILD=overwrite cargo test -p eventdriven-tests --test ui_derive` and review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/derive/pass/*.rs");
    t.compile_fail("ui/derive/fail/*.rs");
}
