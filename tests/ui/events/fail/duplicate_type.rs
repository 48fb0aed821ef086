use eventdriven::prelude::*;
use eventdriven::Events;

#[derive(Event, Clone, Serialize, Deserialize)]
struct Deposited {
    amount: u64,
}

#[derive(Events, Clone)]
enum AccountEvent {
    Deposited(Deposited),
    Refunded(Deposited),
}

fn main() {}
