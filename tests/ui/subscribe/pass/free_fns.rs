use eventdriven::prelude::*;

#[derive(Event, Clone, Debug)]
struct Placed {
    qty: u64,
}

/// Docs on a free subscriber stay on the generated unit struct.
#[subscribe]
async fn log_placed(ev: &Placed, ctx: &mut Context) -> anyhow::Result<()> {
    let _ = (ev.qty, ctx.metadata());
    Ok(())
}

#[subscribe]
fn count(_: &Placed) {}

#[subscribe]
pub(crate) fn fallible(ev: &Placed) -> Result<(), String> {
    if ev.qty == 0 {
        Err("empty order".to_owned())
    } else {
        Ok(())
    }
}

fn main() {
    let _ = App::builder()
        .subscriber(log_placed)
        .subscriber(count)
        .subscriber(fallible);
}
