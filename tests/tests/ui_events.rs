//! Compile tests for `#[derive(Events)]`: `ui/events/pass` must compile, `ui/events/fail` must
//! fail with the checked-in `.stderr`. After a deliberate change, regenerate them with
//! `TRYBUILD=overwrite cargo test -p eventdriven-tests --test ui_events` and review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/events/pass/*.rs");
    t.compile_fail("ui/events/fail/*.rs");
}
