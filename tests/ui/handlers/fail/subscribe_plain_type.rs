use eventdriven::prelude::*;

struct Placed;

struct Orders;

#[handlers]
impl Orders {
    #[subscribe]
    fn on_placed(&mut self, _: &Placed) {}
}

fn main() {}
