use eventdriven::prelude::*;

#[derive(Event, Clone)]
#[event(version = 0)]
struct Placed;

fn main() {}
