//! Runnable examples live beside this crate; run them with `cargo run --example NAME`.
