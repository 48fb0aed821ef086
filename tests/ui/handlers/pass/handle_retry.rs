use eventdriven::prelude::*;

#[derive(Command, Clone, Debug)]
#[command(reply = Result<u64, String>)]
struct Place;

#[derive(Default)]
struct Orders;

#[handlers]
impl Orders {
    #[handle(retry = 3, backoff = "10ms..1s")]
    async fn place(&mut self, _: Place, _ctx: &mut Context<Self>) -> Result<u64, String> {
        Ok(1)
    }
}

fn main() {
    let _ = App::builder().actor(Orders);
}
