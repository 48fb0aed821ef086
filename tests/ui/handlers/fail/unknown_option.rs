use eventdriven::prelude::*;

#[derive(Command)]
struct Place;

struct Orders;

#[handlers(mailbox = 16)]
impl Orders {
    #[handle]
    fn place(&mut self, _: Place) {}
}

fn main() {}
