use eventdriven::prelude::*;

#[derive(Event, Clone)]
struct Placed;

struct Orders;

#[handlers]
impl Orders {
    #[subscribe]
    fn count(&mut self, _: &Placed) {}

    #[subscribe]
    fn log(&mut self, _: &Placed) {}
}

fn main() {}
