use eventdriven::prelude::*;

#[derive(Event, Clone, Debug)]
struct Step {
    order: u64,
}

#[derive(Event, Clone, Debug)]
struct Ping;

#[derive(Default)]
struct Worker;

#[handlers]
impl Worker {
    #[subscribe(ordered, key = |ev: &Step| ev.order, retry = 2, backoff = "10ms..1s")]
    fn on_step(&mut self, _: &Step) -> Result<(), String> {
        Ok(())
    }

    #[subscribe(idempotent, retry = 1, backoff = "5ms", dead_letter)]
    async fn on_ping(&mut self, _: &Ping) {}
}

#[subscribe(retry = 3, crate = "::eventdriven")]
fn log_step(_: &Step) {}

fn main() {
    let _ = App::builder().actor(Worker).subscriber(log_step);
}
