use eventdriven::prelude::*;

#[derive(Command, Debug)]
#[command(reply = Result<u64, String>)]
struct Place {
    qty: u64,
}

#[derive(Command, Debug)]
struct Reset;

#[derive(Event, Clone, Debug)]
struct Placed {
    qty: u64,
}

#[derive(Event, Clone, Debug)]
struct Cleared;

#[derive(Query, Debug)]
#[query(reply = u64)]
struct Total;

#[derive(Default)]
struct Orders {
    total: u64,
}

#[handlers]
impl Orders {
    // Async with a context, returning the declared reply.
    #[handle]
    async fn place(&mut self, cmd: Place, ctx: &mut Context<Self>) -> Result<u64, String> {
        ctx.publish(Placed { qty: cmd.qty })
            .await
            .map_err(|e| e.to_string())?;
        Ok(cmd.qty)
    }

    // Sync, no context, unit reply by default; a pattern binds the message.
    #[handle]
    fn reset(&mut self, Reset: Reset) {
        self.total = 0;
    }

    // A subscriber may return `()` ...
    #[subscribe]
    fn on_placed(&mut self, ev: &Placed) {
        self.total += ev.qty;
    }

    // ... or `Result<(), E>` with a displayable `E`.
    #[subscribe]
    async fn on_cleared(&mut self, _: &Cleared, ctx: &mut Context<Self>) -> Result<(), String> {
        let _ = ctx.metadata();
        Ok(())
    }

    #[query]
    fn total(&self, _q: Total) -> u64 {
        self.total
    }

    // Plain methods are left alone.
    fn helper(&self) -> u64 {
        self.total
    }
}

// The full path of the markers works too.
struct Audit;

#[eventdriven::handlers]
impl Audit {
    #[eventdriven::subscribe]
    fn on_placed(&mut self, _: &Placed) -> anyhow::Result<()> {
        Ok(())
    }
}

fn main() {
    let _ = App::builder().actor(Orders::default()).actor(Audit);
    let _ = Orders::default().helper();
}
