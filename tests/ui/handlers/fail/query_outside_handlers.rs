// `#[query]` outside `#[handlers]`. As with `#[handle]`, the macro crate's `query` attribute is
// not re-exported by `eventdriven`, so rustc reports an unknown attribute (and suggests a
// derive). Regenerate this expectation once `query` is re-exported.
use eventdriven::prelude::*;

#[derive(Query)]
struct Total;

#[query]
fn total(_: Total) {}

fn main() {}
