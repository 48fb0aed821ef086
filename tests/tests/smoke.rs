use eventdriven::prelude::*;

#[derive(Command, Debug)]
#[command(reply = Result<u64, String>)]
struct Place {
    qty: u64,
}

#[derive(Event, Clone, Debug)]
#[event(name = "order.placed", version = 2)]
struct Placed {
    qty: u64,
}

#[derive(Query, Debug)]
#[query(reply = u64)]
struct Total;

#[derive(Default)]
struct Orders {
    total: u64,
}

#[handlers]
impl Orders {
    #[handle]
    async fn place(&mut self, cmd: Place, ctx: &mut Context<Self>) -> Result<u64, String> {
        ctx.publish(Placed { qty: cmd.qty })
            .await
            .map_err(|e| e.to_string())?;
        Ok(cmd.qty)
    }

    #[subscribe]
    fn on_placed(&mut self, ev: &Placed) {
        self.total += ev.qty;
    }

    #[query]
    fn total(&self, _q: Total) -> u64 {
        self.total
    }
}

#[subscribe]
async fn log_it(ev: &Placed, ctx: &mut Context) -> anyhow::Result<()> {
    let _ = (ev, ctx.metadata());
    Ok(())
}

#[tokio::test]
async fn smoke() {
    let app = App::builder()
        .actor(Orders::default())
        .subscriber(log_it)
        .build()
        .await
        .unwrap();
    assert_eq!(app.send(Place { qty: 3 }).await.unwrap(), Ok(3));
    assert_eq!(app.send(Place { qty: 4 }).await.unwrap(), Ok(4));
    assert_eq!(app.query(Total).await.unwrap(), 7);
    app.shutdown().await.unwrap();
}
