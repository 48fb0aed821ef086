use eventdriven::prelude::*;

#[derive(Command)]
struct Place;

struct Orders;

#[handlers]
impl Orders {
    #[handle]
    fn place(&mut self, _ctx: &mut Context<Self>, _cmd: Place) {}
}

fn main() {}
