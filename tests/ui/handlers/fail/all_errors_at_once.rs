// Every error is reported at once: the signature errors from the macro, and the type errors
// of the handlers that are well-formed (which are still generated).
use eventdriven::prelude::*;

#[derive(Command)]
#[command(reply = u64)]
struct Place;

#[derive(Event, Clone)]
struct Placed;

#[derive(Query)]
#[query(reply = u64)]
struct Total;

struct Orders;

#[handlers]
impl Orders {
    #[handle]
    fn place(&mut self, _: Place) -> Option<u64> {
        None
    }

    #[subscribe]
    fn on_placed(&mut self, _: Placed) {}

    #[query]
    fn total(&mut self, _: Total) -> u64 {
        0
    }
}

fn main() {
    // The actor is still an actor: no error here.
    let _ = App::builder().actor(Orders);
}
