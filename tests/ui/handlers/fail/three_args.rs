use eventdriven::prelude::*;

#[derive(Command)]
struct Place;

struct Orders;

#[handlers]
impl Orders {
    #[handle]
    fn place(&mut self, _: Place, _ctx: &mut Context<Self>, _retries: u32) {}
}

fn main() {}
