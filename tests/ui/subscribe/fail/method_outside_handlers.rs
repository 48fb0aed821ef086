use eventdriven::prelude::*;

#[derive(Event, Clone)]
struct Placed;

struct Orders {
    placed: u64,
}

impl Orders {
    #[subscribe]
    fn on_placed(&mut self, _: &Placed) {
        self.placed += 1;
    }
}

fn main() {}
