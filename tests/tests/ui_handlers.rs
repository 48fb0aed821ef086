//! Compile tests for `#[handlers]` impl blocks and their `#[handle]`, `#[subscribe]` and `#[query]` methods: `ui/handlers/pass` must compile, `ui/handlers/fail` must fail with the
//! checked-in `.stderr`. After a deliberate change to a message, regenerate them with
//! `TRYBUILD=overwrite cargo test -p eventdriven-tests --test ui_handlers` and review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/handlers/pass/*.rs");
    t.compile_fail("ui/handlers/fail/*.rs");
}
