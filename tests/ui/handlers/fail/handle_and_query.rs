use eventdriven::prelude::*;

#[derive(Query)]
#[query(reply = u64)]
struct Total;

struct Orders;

#[handlers]
impl Orders {
    #[handle]
    #[query]
    fn total(&self, _: Total) -> u64 {
        0
    }
}

fn main() {}
