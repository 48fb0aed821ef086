// `Self` in a handler's signature means the actor, as anywhere in an impl block.
use eventdriven::prelude::*;

#[derive(Clone, Debug, Default, PartialEq)]
struct Counter {
    total: u64,
}

#[derive(Query, Debug)]
#[query(reply = Counter)]
struct Snapshot;

#[derive(Command, Debug)]
#[command(reply = Option<Counter>)]
struct Reset;

#[handlers]
impl Counter {
    #[query]
    fn snapshot(&self, _: Snapshot) -> Self {
        self.clone()
    }

    #[handle]
    fn reset(&mut self, _: Reset, _ctx: &mut Context<Self>) -> Option<Self> {
        Some(std::mem::take(self))
    }
}

fn main() {
    let _ = App::builder().actor(Counter::default());
}
