use eventdriven::prelude::*;

#[derive(Command)]
struct Place;

struct Orders;

#[handlers]
impl Orders {
    #[handle]
    fn place(&mut self, _: Place) {}

    #[handle]
    fn place_again(&mut self, _: Place) {}
}

fn main() {}
