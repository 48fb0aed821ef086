use eventdriven::prelude::*;

#[derive(Event, Clone)]
struct Placed;

async fn run(app: App) {
    let _ = app.send(Placed).await;
}

fn main() {
    let _ = run;
}
