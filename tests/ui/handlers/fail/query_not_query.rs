use eventdriven::prelude::*;

#[derive(Command)]
#[command(reply = u64)]
struct Total;

struct Orders;

#[handlers]
impl Orders {
    #[query]
    fn total(&self, _: Total) -> u64 {
        0
    }
}

fn main() {}
