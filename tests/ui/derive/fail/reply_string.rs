use eventdriven::prelude::*;

#[derive(Query)]
#[query(reply = "String")]
struct Name;

fn main() {}
