use eventdriven::prelude::*;
use eventdriven::saga::{saga, ProcessError, Transition};

#[derive(Event, Clone, Serialize, Deserialize)]
struct OrderPlaced {
    order: u64,
}

#[derive(Default, Serialize, Deserialize)]
struct Fulfilment;

#[saga]
impl Fulfilment {
    #[start(correlate = |e| e.order)]
    fn placed(&mut self, _: &OrderPlaced) -> Result<Transition, ProcessError> {
        Ok(Transition::Continue)
    }

    #[on(correlate = |e| e.order)]
    fn placed_again(&mut self, _: &OrderPlaced) -> Result<Transition, ProcessError> {
        Ok(Transition::Continue)
    }
}

fn main() {}
