use eventdriven::Events;

#[derive(Events, Clone)]
struct AccountEvent {
    amount: u64,
}

fn main() {}
