//! Compile tests for free `#[subscribe]` functions: `ui/subscribe/pass` must compile, `ui/subscribe/fail` must fail with the
//! checked-in `.stderr`. After a deliberate change to a message, regenerate them with
//! `TRYBUILD=overwrite cargo test -p eventdriven-tests --test ui_subscribe` and review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/subscribe/pass/*.rs");
    t.compile_fail("ui/subscribe/fail/*.rs");
}
