use eventdriven::prelude::*;

#[derive(Command)]
struct Place;

struct Orders;

#[handlers]
impl Orders {
    #[handle]
    fn place(self, _: Place) {}
}

fn main() {}
