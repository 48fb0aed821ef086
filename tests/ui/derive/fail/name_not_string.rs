use eventdriven::prelude::*;

#[derive(Event, Clone)]
#[event(name = order.placed)]
struct Placed;

#[derive(Command)]
#[command(name = "")]
struct Place;

fn main() {}
