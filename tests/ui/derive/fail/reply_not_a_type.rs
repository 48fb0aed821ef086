use eventdriven::prelude::*;

#[derive(Command)]
#[command(reply = 42)]
struct Place;

fn main() {}
