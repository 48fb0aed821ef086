use eventdriven::prelude::*;

#[derive(Command)]
#[command(reply = u64)]
struct Total;

async fn run(app: App) {
    let _ = app.query(Total).await;
}

fn main() {
    let _ = run;
}
