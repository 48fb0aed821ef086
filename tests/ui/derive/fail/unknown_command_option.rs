use eventdriven::prelude::*;

#[derive(Command)]
#[command(reply = u64, version = 2)]
struct Place;

fn main() {}
