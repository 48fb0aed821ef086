use eventdriven::prelude::*;

#[derive(Command)]
struct Place;

struct Orders;

#[handlers]
impl Orders {
    #[handle]
    fn place(&mut self, _cmd: &Place) {}
}

fn main() {}
