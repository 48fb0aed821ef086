use eventdriven::prelude::*;
use eventdriven::Events;

#[derive(Clone, Serialize, Deserialize)]
struct Deposited {
    amount: u64,
}

#[derive(Events, Clone)]
enum AccountEvent {
    Deposited(Deposited),
}

fn main() {}
