use eventdriven::prelude::*;

#[derive(Query)]
#[query(reply = u64)]
struct Total;

struct Orders;

#[handlers]
impl Orders {
    #[query]
    async fn total(&self, _: Total) {}
}

fn main() {}
