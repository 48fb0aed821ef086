use eventdriven::prelude::*;

#[derive(Event, Debug)]
struct Placed {
    qty: u64,
}

fn main() {
    let _ = Placed { qty: 1 }.qty;
}
