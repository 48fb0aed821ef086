// `#[handle]` takes `retry` and `backoff` only; `#[query]` takes none.
use eventdriven::prelude::*;

#[derive(Command, Clone)]
struct Place;

#[derive(Query)]
#[query(reply = u64)]
struct Total;

struct Orders;

#[handlers]
impl Orders {
    #[handle(retry = 2, idempotent)]
    fn place(&mut self, _: Place) {}

    #[query(retry = 3)]
    fn total(&self, _: Total) -> u64 {
        0
    }
}

fn main() {}
