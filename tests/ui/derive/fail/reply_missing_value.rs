use eventdriven::prelude::*;

#[derive(Command)]
#[command(reply)]
struct Place;

fn main() {}
