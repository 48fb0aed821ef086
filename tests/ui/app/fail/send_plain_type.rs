use eventdriven::prelude::*;

struct Place;

async fn run(app: App) {
    let _ = app.send(Place).await;
}

fn main() {
    let _ = run;
}
