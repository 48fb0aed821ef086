use eventdriven::prelude::*;

#[derive(Command)]
#[eventdriven(krate = "::eventdriven")]
struct Place;

fn main() {}
