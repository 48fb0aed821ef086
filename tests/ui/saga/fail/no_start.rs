use eventdriven::prelude::*;
use eventdriven::saga::{saga, ProcessError, Transition};

#[derive(Event, Clone, Serialize, Deserialize)]
struct PaymentCompleted {
    order: u64,
}

#[derive(Default, Serialize, Deserialize)]
struct Fulfilment;

#[saga]
impl Fulfilment {
    #[on(correlate = |e| e.order)]
    fn paid(&mut self, _: &PaymentCompleted) -> Result<Transition, ProcessError> {
        Ok(Transition::Done)
    }
}

fn main() {}
