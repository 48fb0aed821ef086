use std::time::Duration;

use eventdriven::prelude::*;
use eventdriven::saga::{saga, ProcessContext, ProcessError, ProcessManager, Transition};
use eventdriven::testing::ProcessFixture;

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "order.placed")]
struct OrderPlaced {
    order: u64,
}

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "payment.completed")]
struct PaymentCompleted {
    order: u64,
}

#[derive(Command, Debug)]
#[command(reply = ())]
struct Remind {
    order: u64,
}

#[derive(Default, Serialize, Deserialize)]
struct Fulfilment {
    order: u64,
    paid: bool,
}

#[saga(name = "fulfilment")]
impl Fulfilment {
    #[start(correlate = |e| e.order)]
    async fn placed(
        &mut self,
        event: &OrderPlaced,
        ctx: &mut ProcessContext<'_>,
    ) -> Result<Transition, ProcessError> {
        self.order = event.order;
        ctx.set_timeout(Duration::from_secs(60));
        Ok(Transition::Continue)
    }

    // Plain and without a context works too.
    #[on(correlate = |e| e.order)]
    fn paid(&mut self, _: &PaymentCompleted) -> Result<Transition, ProcessError> {
        self.paid = true;
        Ok(Transition::Done)
    }

    #[timeout]
    async fn reminder(&mut self, ctx: &mut ProcessContext<'_>) -> Result<Transition, ProcessError> {
        ctx.tell(Remind { order: self.order }).await?;
        Ok(Transition::Continue)
    }

    // Not a handler: left alone.
    fn describe(&self) -> String {
        format!("order {}", self.order)
    }
}

fn main() {
    assert_eq!(<Fulfilment as ProcessManager>::NAME, "fulfilment");
    let _ = ProcessFixture::<Fulfilment>::given_no_previous_events()
        .when(OrderPlaced { order: 3 }.into())
        .then_expect_continue()
        .then_expect_timeout(true)
        .then_expect_state(|s| assert_eq!(s.describe(), "order 3"));
    let _ = ProcessFixture::<Fulfilment>::given([OrderPlaced { order: 3 }.into()])
        .when_timeout()
        .then_expect_command_names(&["Remind"]);
    let _ = ProcessFixture::<Fulfilment>::given([OrderPlaced { order: 3 }.into()])
        .when(PaymentCompleted { order: 3 }.into())
        .then_expect_done();
}
