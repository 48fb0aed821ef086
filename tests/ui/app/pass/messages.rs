use eventdriven::prelude::*;

#[derive(Command, Debug)]
#[command(reply = u64)]
struct Add(u64);

#[derive(Event, Clone, Debug)]
struct Added(u64);

#[derive(Query, Debug)]
#[query(reply = u64)]
struct Total;

async fn drive(app: &App) -> eventdriven::Result<u64> {
    let sum: u64 = app.send(Add(1)).await?;
    app.tell(Add(2)).await?;
    app.publish(Added(sum)).await?;
    let total: u64 = app.query(Total).await?;
    Ok(total)
}

fn main() {
    let _ = drive;
}
