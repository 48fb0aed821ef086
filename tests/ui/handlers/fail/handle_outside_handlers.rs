// `#[handle]` outside `#[handlers]`. The macro crate's `handle` attribute would say "add
// `#[handlers]` above the `impl`", but `eventdriven` does not re-export it, so rustc reports an
// unknown attribute (and suggests `#[handlers]` in its place). Regenerate this expectation once
// `handle` is re-exported.
use eventdriven::prelude::*;

#[derive(Command)]
struct Place;

struct Orders;

impl Orders {
    #[handle]
    fn place(&mut self, _: Place) {}
}

fn main() {}
