use eventdriven::prelude::*;

#[derive(Command)]
struct Place;

async fn run(app: App) {
    let _ = app.publish(Place).await;
}

fn main() {
    let _ = run;
}
