use eventdriven::prelude::*;

#[subscribe]
struct OnPlaced;

fn main() {}
