use eventdriven::prelude::*;
use eventdriven::Events;

#[derive(Event, Clone, Serialize, Deserialize)]
struct Opened;

#[derive(Events, Clone)]
enum AccountEvent {
    Opened(Opened),
    Deposited { amount: u64 },
}

// The enum still implements `Events`: no second error here.
fn name(event: &AccountEvent) -> &'static str {
    eventdriven::aggregate::Events::name(event)
}

fn main() {
    let _ = name;
}
