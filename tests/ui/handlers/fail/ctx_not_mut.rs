use eventdriven::prelude::*;

#[derive(Command)]
struct Place;

struct Orders;

#[handlers]
impl Orders {
    #[handle]
    fn place(&mut self, _: Place, _ctx: Context<Self>) {}
}

fn main() {}
