use eventdriven::prelude::*;

#[derive(Event, Clone)]
struct Placed;

#[subscribe(retries = 3)]
fn on_placed(_: &Placed) {}

fn main() {}
