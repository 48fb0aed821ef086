// A wrong option is reported, but the traits are still implemented (with the options that
// parsed), so the type's uses add no "not a command" errors.
use eventdriven::prelude::*;

#[derive(Command)]
#[command(reply = u64, nmae = "order.place")]
struct Place;

async fn place(app: &App) -> eventdriven::Result<u64> {
    app.send(Place).await
}

fn main() {
    let _ = place;
}
