use eventdriven::prelude::*;

#[derive(Command)]
struct Place;

#[subscribe]
async fn on_place(_: &Place) {}

fn main() {
    let _ = App::builder().subscriber(on_place);
}
