use eventdriven::prelude::*;

#[derive(Query)]
#[query(reply = u64)]
struct Total;

struct Orders {
    total: u64,
}

#[handlers]
impl Orders {
    #[query]
    fn total(&mut self, _: Total) -> u64 {
        self.total
    }
}

fn main() {}
