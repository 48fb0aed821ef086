use eventdriven::prelude::*;

#[derive(Event, Clone)]
#[event(reply = u64)]
struct Placed;

fn main() {}
