use eventdriven::prelude::*;

#[derive(Event, Clone)]
struct Placed;

#[subscribe]
fn on_placed(&self, _: &Placed) {}

fn main() {}
