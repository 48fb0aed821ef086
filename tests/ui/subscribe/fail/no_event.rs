use eventdriven::prelude::*;

#[subscribe]
fn on_placed() {}

fn main() {}
