use eventdriven::prelude::*;
use eventdriven::Events;

#[derive(Event, Clone, Serialize, Deserialize)]
struct Opened;

#[derive(Events, Clone)]
#[eventdriven(krate = "eventdriven")]
enum AccountEvent {
    Opened(Opened),
}

fn main() {}
