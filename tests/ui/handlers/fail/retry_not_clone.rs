// A command whose handler retries is handled again from a copy, so it must be `Clone`.
use eventdriven::prelude::*;

#[derive(Command)]
#[command(reply = Result<u64, String>)]
struct Place;

struct Orders;

#[handlers]
impl Orders {
    #[handle(retry = 3, backoff = "10ms..1s")]
    fn place(&mut self, _: Place) -> Result<u64, String> {
        Ok(1)
    }
}

fn main() {}
