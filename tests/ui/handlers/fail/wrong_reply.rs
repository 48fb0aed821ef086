use eventdriven::prelude::*;

#[derive(Command)]
#[command(reply = Result<u64, String>)]
struct Place;

struct Orders;

#[handlers]
impl Orders {
    #[handle]
    fn place(&mut self, _: Place) -> u64 {
        1
    }
}

fn main() {}
