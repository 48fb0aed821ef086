use eventdriven::prelude::*;

struct Orders;

#[handlers]
impl Orders {
    fn place(&mut self) {}
}

fn main() {}
