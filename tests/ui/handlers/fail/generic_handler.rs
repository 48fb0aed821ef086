use eventdriven::prelude::*;

struct Orders;

#[handlers]
impl Orders {
    #[handle]
    fn place<C: Command>(&mut self, _: C) {}
}

fn main() {}
