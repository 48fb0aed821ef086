use eventdriven::prelude::*;
use eventdriven::Events;

#[derive(Event, Clone, Serialize, Deserialize)]
struct Opened;

#[derive(Events, Clone)]
enum AccountEvent {
    Opened(Opened, u64),
}

fn main() {}
