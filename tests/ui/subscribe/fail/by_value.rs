use eventdriven::prelude::*;

#[derive(Event, Clone)]
struct Placed;

#[subscribe]
fn on_placed(_ev: Placed, _ctx: &mut Context) {}

fn main() {
    let _ = App::builder().subscriber(on_placed);
}
