use eventdriven::prelude::*;

#[derive(Event, Clone)]
struct Placed;

struct Orders;

#[handlers]
impl Orders {
    #[handle]
    fn place(&mut self, _: Placed) {}
}

fn main() {}
