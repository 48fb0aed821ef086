use eventdriven::prelude::*;

#[derive(Command, Debug)]
#[command(reply = Result<u64, String>, name = "order.place")]
struct Place {
    qty: u64,
}

#[derive(Event, Clone, Debug)]
#[event(name = "order.placed", version = 2)]
struct Placed {
    qty: u64,
}

#[derive(Query, Debug)]
#[query(reply = Vec<u64>)]
struct History;

#[derive(Command, Debug)]
struct Reset;

// Options may be split over several attributes.
#[derive(Event, Clone, Debug)]
#[event(name = "order.reset")]
#[event(version = 3)]
enum Cleared {
    All,
    One(u64),
}

fn reply_of<C: Command>(_: &C) -> std::marker::PhantomData<C::Reply> {
    std::marker::PhantomData
}

fn main() {
    let _: std::marker::PhantomData<Result<u64, String>> = reply_of(&Place { qty: 1 });
    let _: std::marker::PhantomData<()> = reply_of(&Reset);
    assert_eq!(<Place as Message>::NAME, "order.place");
    assert_eq!(<Placed as Message>::VERSION, 2);
    assert_eq!(<History as Message>::NAME, "History");
    assert_eq!(<Cleared as Message>::VERSION, 3);
    let _ = (Placed { qty: 1 }.qty, Cleared::One(1), Cleared::All);
    let _: <History as Query>::Reply = Vec::new();
}
