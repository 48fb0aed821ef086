use eventdriven::prelude::*;

#[derive(Command)]
struct Place;

trait Shop {
    fn place(&mut self, cmd: Place);
}

struct Orders;

#[handlers]
impl Shop for Orders {
    #[handle]
    fn place(&mut self, _: Place) {}
}

fn main() {}
