use eventdriven::prelude::*;

#[handlers]
struct Orders;

fn main() {}
