use eventdriven::prelude::*;

#[derive(Command)]
struct Place;

#[derive(Query)]
struct Stock;

struct Orders;

#[handlers]
impl Orders {
    #[handle]
    async fn place(&mut self, _: Place, ctx: &mut Context<Self>) {
        let _ = ctx.publish(Stock).await;
    }
}

fn main() {}
