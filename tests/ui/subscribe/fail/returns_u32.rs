use eventdriven::prelude::*;

#[derive(Event, Clone)]
struct Placed;

#[subscribe]
fn on_placed(_: &Placed) -> u32 {
    0
}

fn main() {}
