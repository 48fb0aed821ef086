use eventdriven::prelude::*;

#[derive(Query)]
#[query(replies = u64)]
struct Total;

fn main() {}
