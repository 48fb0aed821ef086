use eventdriven::prelude::*;

#[derive(Command)]
struct Place;

struct Orders;

#[handlers]
impl Orders {
    #[subscribe]
    fn on_place(&mut self, _: &Place) {}
}

fn main() {}
