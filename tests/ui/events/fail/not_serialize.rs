use eventdriven::prelude::*;
use eventdriven::Events;

#[derive(Event, Clone)]
struct Deposited {
    amount: u64,
}

#[derive(Events, Clone)]
enum AccountEvent {
    Deposited(Deposited),
}

fn main() {}
