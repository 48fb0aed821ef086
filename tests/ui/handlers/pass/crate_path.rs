// `crate = "..."` for crates that re-export eventdriven under another name.
extern crate eventdriven as renamed;

use renamed::prelude::*;

#[derive(Command)]
#[eventdriven(crate = "::renamed")]
struct Place;

#[derive(Default)]
struct Orders;

#[handlers(crate = "::renamed")]
impl Orders {
    #[handle]
    fn place(&mut self, _: Place, _ctx: &mut renamed::Context<Self>) {}
}

#[subscribe(crate = "::renamed")]
fn nothing(_: &Never) {}

#[derive(Event, Clone)]
#[eventdriven(crate = "::renamed")]
struct Never;

fn main() {
    let _ = App::builder().actor(Orders).subscriber(nothing);
}
