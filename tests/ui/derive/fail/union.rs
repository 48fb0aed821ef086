use eventdriven::prelude::*;

#[derive(Command)]
union Place {
    qty: u64,
    price: f64,
}

fn main() {}
