use eventdriven::prelude::*;

#[derive(Event, Clone)]
struct Placed;

struct Orders;

#[handlers]
impl Orders {
    #[subscribe]
    fn on_placed(&mut self, _: &Placed) -> u32 {
        0
    }
}

fn main() {}
