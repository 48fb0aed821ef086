use eventdriven::prelude::*;

struct Orders;

#[handlers]
impl Orders {
    #[handle]
    fn place(&mut self) {}
}

fn main() {}
