// `#[eventdriven(crate = "...")]` for crates that re-export eventdriven under another name.
extern crate eventdriven as renamed;

mod inner {
    pub use renamed::prelude::*;
}

#[derive(inner::Event, Clone, Debug)]
#[eventdriven(crate = "::renamed")]
struct Placed;

fn main() {
    assert_eq!(<Placed as renamed::Message>::NAME, "Placed");
}
