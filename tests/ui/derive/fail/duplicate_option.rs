use eventdriven::prelude::*;

#[derive(Command)]
#[command(name = "order.place", reply = u64)]
#[command(name = "order.put")]
struct Place;

fn main() {}
