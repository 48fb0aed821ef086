use eventdriven::prelude::*;

#[derive(Event, Clone)]
struct Placed;

struct Orders;

#[handlers]
impl Orders {
    #[subscribe]
    fn on_placed(&mut self, _ev: Placed) {}
}

fn main() {}
